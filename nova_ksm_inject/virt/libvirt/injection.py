"""Data injection at spawn with nova's rules, through the handler chain.

nova's ``disk_api.inject_data(..., mandatory=('files',))`` treats the
injected files as mandatory and everything else as best-effort: when the
image cannot be opened it raises if files were asked for and otherwise
logs a warning and boots the guest as is; when one item fails it raises
for files and otherwise logs it and writes the others. The chain decides
per item itself (``InjectionRequest.mandatory``) in a single mount; this
module only maps the "image could not be opened" rule. Nothing here
imports nova, so it is tested without it.
"""

import dataclasses

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api

LOG = logging.getLogger(__name__)

#: What nova's libvirt driver declares mandatory.
MANDATORY = ('files',)


def setup_failed(request, err, image_id):
    """The image could not be opened: raise ``err`` if a mandatory item
    was requested, else log it and inject nothing (nova's rule).

    :returns: [(item, reason)] ignored.
    """
    if request.any_mandatory():
        raise err
    LOG.warning('Ignoring error injecting data into image %(image)s '
                '(%(err)s)', {'image': image_id, 'err': err})
    return [(item, str(err)) for item in request.requested()]


def inject(path, fmt, partition, image_id, request, handler_names=None,
           inject_data=None):
    """Write ``request`` with nova's rules, mounting the image once.

    :param inject_data: a stand-in for :func:`nova_ksm_inject.disk.api.
        inject_data` (tests).
    :returns: [(item, reason)] ignored on the way.
    :raises NovaKsmInjectError: a mandatory item could not be written,
        or the image could not be opened while one was requested.
    """
    request = dataclasses.replace(request, mandatory=MANDATORY)
    try:
        result = (inject_data or api.inject_data)(
            path, request, fmt=fmt, partition=partition,
            handler_names=handler_names)
    except exception.NovaKsmInjectError as err:
        return setup_failed(request, err, image_id)
    for item, reason in result.failed:
        LOG.warning('Ignoring error injecting %(item)s into image %(image)s '
                    '(%(err)s)', {'item': item, 'image': image_id,
                                  'err': reason})
    return result.failed
