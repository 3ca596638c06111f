"""Data injection at spawn with nova's rules, through the handler chain.

nova's ``disk_api.inject_data(..., mandatory=('files',))`` treats the
injected files as mandatory and everything else as best-effort: when the
image cannot be opened it raises if files were asked for and otherwise
logs a warning and boots the guest as is; when one item fails it raises
for files and otherwise logs it and writes the others. This module keeps
exactly that contract on top of :func:`nova_ksm_inject.disk.api.
inject_data`, which opens the image once and stops at the first item that
fails: the failed best-effort item is dropped and the rest injected again.
Nothing here imports nova, so it is tested without it.
"""

import dataclasses

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject

LOG = logging.getLogger(__name__)

#: The items of a request, in the order nova writes them.
ITEMS = ('key', 'net', 'metadata', 'admin_password', 'files')
#: What nova's libvirt driver declares mandatory.
MANDATORY = ('files',)

# Failures of one item once the image is open; anything else means the
# image could not be opened (nova's "setup" failure).
ITEM_ERRORS = (exception.InjectionFailed, exception.NoShadowEntry,
               exception.GuestPathRefused, exception.InjectionLimit)


def only(request, item):
    """A request holding just ``item`` of ``request``."""
    return inject.InjectionRequest(**{item: getattr(request, item)})


def without(request, item):
    """``request`` without ``item``."""
    empty = [] if item == 'files' else None
    return dataclasses.replace(request, **{item: empty})


def requested(request):
    """The items ``request`` asks for, in nova's order."""
    return [item for item in ITEMS if getattr(request, item)]


def failed_item(err):
    """The item an item failure is about, or None when it cannot be told."""
    if isinstance(err, exception.NoShadowEntry):
        return 'admin_password'
    what = err.kwargs.get('what') or ''
    if what.startswith('file '):
        return 'files'
    return what if what in ITEMS else None


def setup_failed(request, err, image_id, mandatory=MANDATORY):
    """The image could not be opened: raise ``err`` if a mandatory item
    was requested, else log it and inject nothing (nova's rule).

    :returns: [(item, reason)] ignored.
    """
    if any(item in mandatory for item in requested(request)):
        raise err
    LOG.warning('Ignoring error injecting data into image %(image)s '
                '(%(err)s)', {'image': image_id, 'err': err})
    return [(item, str(err)) for item in requested(request)]


class NovaRulesInjector(object):
    """Inject one request into one image, files mandatory, rest best-effort.

    :param image_id: the glance image id, for log lines.
    :param inject_data: a stand-in for
        :func:`nova_ksm_inject.disk.api.inject_data` (tests).
    """

    def __init__(self, path, fmt, partition, image_id, mandatory=MANDATORY,
                 handler_names=None, inject_data=None):
        self.path = path
        self.fmt = fmt
        self.partition = partition
        self.image_id = image_id
        self.mandatory = tuple(mandatory)
        self.handler_names = handler_names
        self._inject_data = inject_data
        self.ignored = []

    def inject(self, request):
        """Write ``request``; returns [(item, reason)] ignored on the way.

        :raises NovaKsmInjectError: a mandatory item could not be written,
            or the image could not be opened while one was requested.
        """
        request = self._drop_invalid(request)
        while not request.is_empty():
            try:
                self._call(request)
                break
            except ITEM_ERRORS as err:
                item = failed_item(err)
                if item is None:
                    self._one_by_one(request, err)
                    break
                self._ignore_or_raise(item, err)
                request = without(request, item)
            except exception.NovaKsmInjectError as err:
                self.ignored.extend(setup_failed(request, err, self.image_id,
                                                 self.mandatory))
                break
        return self.ignored

    def _call(self, request):
        inject_data = self._inject_data or api.inject_data
        return inject_data(self.path, request, fmt=self.fmt,
                           partition=self.partition,
                           handler_names=self.handler_names)

    def _drop_invalid(self, request):
        """Check each item's limits before opening the image."""
        for item in requested(request):
            try:
                inject.check_limits(only(request, item))
            except ITEM_ERRORS as err:
                self._ignore_or_raise(item, err)
                request = without(request, item)
        return request

    def _ignore_or_raise(self, item, err):
        if item in self.mandatory:
            raise err
        LOG.warning('Ignoring error injecting %(item)s into image '
                    '%(image)s (%(err)s)',
                    {'item': item, 'image': self.image_id, 'err': err})
        self.ignored.append((item, str(err)))

    def _one_by_one(self, request, first_err):
        """An item failed and its error does not say which: retry each
        item alone, in nova's order, so every good item still lands."""
        LOG.debug('Injection into %s failed (%s); injecting each item '
                  'separately', self.path, first_err)
        for item in requested(request):
            try:
                self._call(only(request, item))
            except exception.NovaKsmInjectError as err:
                self._ignore_or_raise(item, err)
