"""Inject data into a guest image: the caller's side.

``inject_data`` builds one job from plain data and hands it to the
handler chain (:mod:`nova_ksm_inject.disk.chain`). Handlers that need no
privilege (``fuse2fs``, ``guestfs``: the default ``img_handlers``) run in
this process, whoever it belongs to. Handlers that do (the kernel-mount
ones: ``loop``, ``qsd``, ``nbd``) run here when the caller is root, and
otherwise through the ``[privsep_inject]`` privsep daemon, which
validates the job itself; the configured order is kept across both.
Nothing privileged stays open between calls. The result says which
handler was used, why each other one was skipped or failed, and what
happened to every item.
"""

import dataclasses

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import chain
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk import job as disk_job
from nova_ksm_inject.disk import request as disk_request
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import loader
from nova_ksm_inject.privsep import client

LOG = logging.getLogger(__name__)

NAMESPACE = loader.NAMESPACE
available_handlers = loader.available_handlers
validate_handler_names = loader.validate_handler_names


def load_handlers(names, conf=CONF):
    """Instantiate the handlers ``names``, in that order."""
    return loader.load(names, conf)


@dataclasses.dataclass
class InjectionResult:
    image: disk_image.ImageInfo
    handler: str = None
    attempts: list = dataclasses.field(default_factory=list)
    items: list = dataclasses.field(default_factory=list)

    @property
    def injected(self):
        """The items written, in order."""
        return [i.item for i in self.items if i.status == inject.WRITTEN]

    @property
    def failed(self):
        """``[(item, reason)]`` of best-effort items that were skipped."""
        return [(i.item, i.reason) for i in self.items
                if i.status == inject.FAILED]

    @classmethod
    def from_dict(cls, data):
        return cls(disk_image.ImageInfo.from_dict(data['image']),
                   data['handler'],
                   [chain.Attempt(**a) for a in data['attempts']],
                   [inject.ItemResult(**i) for i in data['items']])


def inject_data(path, request, fmt=None, partition=0, handler_names=None,
                use_cow=None, trusted_dirs=None, conf=CONF):
    """Inject ``request`` into the image at ``path``, mounting it once.

    :param request: :class:`nova_ksm_inject.disk.request.InjectionRequest`;
        its ``mandatory`` items fail the call, the others are best-effort
        and reported per item.
    :param fmt: 'raw' or 'qcow2' when known; detected safely otherwise.
    :param partition: -1 inspect, 0 whole disk, N partition N.
    :param handler_names: defaults to ``img_handlers``.
    :param use_cow: defaults to ``use_cow_images``.
    :param trusted_dirs: defaults to ``[inject] trusted_backing_dirs``.
    :returns: :class:`InjectionResult`.
    :raises NoHandlerMounted: every handler was skipped or failed; the
        message lists each with its reason.
    :raises NovaKsmInjectError: any other failure (never another type).
    """
    names = list(handler_names or conf.img_handlers)
    validate_handler_names(names)
    disk_request.check_limits(request, conf)
    job = disk_job.build(path, request, fmt, partition, names, use_cow,
                         trusted_dirs)
    if client.is_root():
        return InjectionResult.from_dict(client.inject_image(job, conf))
    attempts = []
    for needs_root, group in _groups(names, conf):
        part = dict(job, handlers=group)
        try:
            data = (client.inject_image(part, conf) if needs_root else
                    chain.run(part, confined=False, conf=conf))
        except exception.NoHandlerMounted as err:
            attempts += err.attempts or [chain.Attempt(
                ','.join(group), chain.FAILED, str(err))]
            continue
        result = InjectionResult.from_dict(data)
        result.attempts = attempts + result.attempts
        return result
    raise exception.NoHandlerMounted(
        job['image'], [(a.handler, a.reason) for a in attempts], attempts)


def _groups(names, conf):
    """``[(needs root, [name...])]``: runs of consecutive handlers that
    need privilege or not, in the configured order."""
    groups = []
    for handler in loader.load(names, conf):
        if groups and groups[-1][0] == handler.privileged:
            groups[-1][1].append(handler.name)
        else:
            groups.append((handler.privileged, [handler.name]))
    return groups


def cleanup(conf=CONF):
    """Undo what killed injections left; a list of result dicts.

    Root sweeps ``[inject] state_dir``. Anyone else sweeps their own state
    directory here, and ``[inject] state_dir`` through the privsep daemon
    only when ``img_handlers`` names a handler that needs it.
    """
    if client.is_root():
        return client.sweep_journals(conf)
    from nova_ksm_inject.disk import sweep

    results = [r.to_dict() for r in sweep.sweep(state.state_dir(conf))]
    if any(h.privileged for h in loader.load(list(conf.img_handlers),
                                             conf)):
        results += client.sweep_journals(conf)
    return results


def describe_failure(err):
    """One-line reason, for logs."""
    if isinstance(err, exception.NovaKsmInjectError):
        return str(err)
    return '%s: %s' % (type(err).__name__, err)
