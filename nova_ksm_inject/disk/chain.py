"""The handler chain: one call injects one image, start to finish.

This is what runs with privileges (in the privsep daemon, or in a root
caller's own process): it rebuilds the job from plain data, trusting
nothing the caller says (:mod:`nova_ksm_inject.disk.job`), inspects the
image safely, walks ``img_handlers`` in order (skip with a reason, try,
fall through on failure), writes every item through the first handler
that mounts the image, and unwinds every step in reverse whatever
happens. It returns plain data: the privsep channel carries nothing else.
"""

import contextlib
import dataclasses
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk import job as disk_job
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import base
from nova_ksm_inject.disk.handlers import loader as handler_loader

LOG = logging.getLogger(__name__)

USED, SKIPPED, UNAVAILABLE, FAILED = 'used', 'skipped', 'unavailable', 'failed'


@dataclasses.dataclass
class Attempt:
    """What happened to one handler of the chain for one image."""

    handler: str
    outcome: str
    reason: str = None
    seconds: float = 0.0


def run(job_data, confined, conf=CONF):
    """Validate ``job_data`` and inject it; return the result as a dict.

    :param confined: the caller is not root (privsep): the image must lie
        in ``[inject] image_dirs`` and trusted directories can only be
        narrowed. False for a root caller's own, direct call.
    :raises NoHandlerMounted: every handler was skipped or failed.
    :raises NovaKsmInjectError: any other failure, after a full unwind;
        never another exception type.
    """
    job = disk_job.Job.from_dict(job_data, conf, confined)
    try:
        return _run(job, conf)
    except exception.NovaKsmInjectError:
        raise
    except Exception as err:
        LOG.debug('Injection into %s failed', job.image, exc_info=True)
        raise exception.InjectionFailed(
            what=job.request.describe(), image=job.image,
            reason='%s: %s' % (type(err).__name__, err)) from err


def _run(job, conf):
    handlers = handler_loader.load(job.handlers, conf)
    with contextlib.ExitStack() as holder:
        info = disk_image.inspect_image(
            job.image, fmt=job.format, trusted_dirs=job.trusted_dirs,
            holder=holder, within=job.image_dirs)
        need_cow = job.use_cow or info.format == 'qcow2'
        attempts = []
        for handler in handlers:
            items = _try_handler(handler, info, job, need_cow, attempts,
                                 conf)
            if items is not None:
                return {'image': info.to_dict(), 'handler': handler.name,
                        'attempts': [dataclasses.asdict(a)
                                     for a in attempts],
                        'items': [item.to_dict() for item in items]}
    raise exception.NoHandlerMounted(
        info.path, [(a.handler, a.reason) for a in attempts], attempts)


def _try_handler(handler, info, job, need_cow, attempts, conf):
    """Try one handler; the items' results, or None to go on."""
    started = time.monotonic()

    def record(outcome, reason=None):
        attempts.append(Attempt(handler.name, outcome, reason,
                                round(time.monotonic() - started, 4)))

    reason = handler.skip_reason(info, job.partition, need_cow)
    if reason:
        LOG.info('Skipping image handler %s for %s: %s', handler.name,
                 info.path, reason)
        record(SKIPPED, reason)
        return None
    try:
        handler.check_host()
    except exception.HandlerUnavailable as err:
        LOG.warning('Image handler %s is unavailable on this host: %s; '
                    'trying the next', handler.name, err)
        record(UNAVAILABLE, str(err))
        return None
    with state.Journal(state.state_dir(conf), info.path,
                       handler.name) as journal:
        try:
            files = handler.mount(info, job.partition, journal)
        except Exception as err:
            reason = base.describe_failure(err)
            LOG.debug('Image handler %s failed', handler.name, exc_info=True)
            LOG.warning('Image handler %s failed to mount %s: %s; trying '
                        'the next', handler.name, info.path, reason)
            record(FAILED, reason)
            return None
        items = inject.inject_data(files, job.request, image_desc=info.path,
                                   conf=conf)
    record(USED)
    LOG.info('Injected %s into %s with handler %s in %.3f s',
             ', '.join(i.item for i in items if i.status == inject.WRITTEN)
             or 'nothing', info.path, handler.name, attempts[-1].seconds)
    return items
