"""Inject data into a guest image through the configured handler chain.

``inject_data`` inspects the image safely, walks ``img_handlers`` in order
(skip with a reason, try, fall through on failure), writes the data through
the first handler that mounts the image, and unwinds every step in reverse
whatever happens. Every attempt is recorded so operators see why each
handler was skipped or failed.
"""

import dataclasses
import importlib.metadata
import time

from oslo_log import log as logging
from stevedore import named

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import base

LOG = logging.getLogger(__name__)

NAMESPACE = 'nova_ksm_inject.image_handlers'

USED, SKIPPED, UNAVAILABLE, FAILED = 'used', 'skipped', 'unavailable', 'failed'


@dataclasses.dataclass
class Attempt:
    """What happened to one handler of the chain for one image."""

    handler: str
    outcome: str
    reason: str = None
    seconds: float = 0.0


@dataclasses.dataclass
class InjectionResult:
    image: disk_image.ImageInfo
    handler: str = None
    attempts: list = dataclasses.field(default_factory=list)
    injected: list = dataclasses.field(default_factory=list)


def available_handlers():
    """Names installed in the handler namespace, without importing them."""
    eps = importlib.metadata.entry_points(group=NAMESPACE)
    return sorted({ep.name for ep in eps})


def validate_handler_names(names):
    """Raise UnknownHandler unless every name is installed.

    Called at startup (commands, nova-compute's init_host) so a typo in
    ``img_handlers`` fails loudly instead of silently dropping a handler.
    """
    valid = available_handlers()
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise exception.UnknownHandler(
            names=', '.join(unknown) or '(empty list)', namespace=NAMESPACE,
            valid=', '.join(valid))


def _missing_names(names):
    raise exception.UnknownHandler(
        names=', '.join(names), namespace=NAMESPACE,
        valid=', '.join(available_handlers()))


def _load_failure(manager, entrypoint, err):
    LOG.debug('Loading image handler %s failed', entrypoint.name,
              exc_info=err)
    raise exception.ConfigError(
        reason='image handler %s (%s) failed to load: %s; reinstall the '
               'package providing it or remove it from img_handlers'
               % (entrypoint.name, entrypoint.value, err)) from err


def load_handlers(names, conf=CONF):
    """Instantiate the handlers ``names``, in that order."""
    validate_handler_names(names)
    manager = named.NamedExtensionManager(
        NAMESPACE, names, name_order=True, invoke_on_load=True,
        invoke_args=(conf,),
        on_missing_entrypoints_callback=_missing_names,
        on_load_failure_callback=_load_failure)
    handlers = []
    for ext in manager:
        ext.obj.name = ext.name
        handlers.append(ext.obj)
    return handlers


def inject_data(path, request, fmt=None, partition=0, handler_names=None,
                use_cow=None, trusted_dirs=None, conf=CONF):
    """Inject ``request`` into the image at ``path``.

    :param request: :class:`nova_ksm_inject.disk.inject.InjectionRequest`.
    :param fmt: 'raw' or 'qcow2' when known; detected safely otherwise.
    :param partition: -1 inspect, 0 whole disk, N partition N.
    :param handler_names: defaults to ``img_handlers``.
    :param use_cow: defaults to ``use_cow_images``.
    :param trusted_dirs: defaults to ``[inject] trusted_backing_dirs``.
    :returns: :class:`InjectionResult`.
    :raises NoHandlerMounted: every handler was skipped or failed; the
        message lists each with its reason.
    """
    names = list(handler_names or conf.img_handlers)
    handlers = load_handlers(names, conf)
    inject.check_limits(request, conf)
    info = disk_image.inspect_image(path, fmt=fmt, trusted_dirs=trusted_dirs)
    use_cow = conf.use_cow_images if use_cow is None else use_cow
    need_cow = use_cow or info.format == 'qcow2'
    result = InjectionResult(image=info)
    for handler in handlers:
        if _try_handler(handler, info, partition, need_cow, request, result,
                        conf):
            return result
    raise exception.NoHandlerMounted(
        path, [(a.handler, a.reason) for a in result.attempts])


def _try_handler(handler, info, partition, need_cow, request, result, conf):
    started = time.monotonic()

    def record(outcome, reason=None):
        result.attempts.append(Attempt(handler.name, outcome, reason,
                                       time.monotonic() - started))

    reason = handler.skip_reason(info, partition, need_cow)
    if reason:
        LOG.info('Skipping image handler %s for %s: %s', handler.name,
                 info.path, reason)
        record(SKIPPED, reason)
        return False
    try:
        handler.check_host()
    except exception.HandlerUnavailable as err:
        LOG.warning('Image handler %s is unavailable on this host: %s; '
                    'trying the next', handler.name, err)
        record(UNAVAILABLE, str(err))
        return False
    with state.Journal(conf.inject.state_dir, info.path,
                       handler.name) as journal:
        try:
            files = handler.mount(info, partition, journal)
        except Exception as err:
            reason = base.describe_failure(err)
            LOG.debug('Image handler %s failed', handler.name, exc_info=True)
            LOG.warning('Image handler %s failed to mount %s: %s; trying '
                        'the next', handler.name, info.path, reason)
            record(FAILED, reason)
            return False
        result.injected = inject.inject_data(files, request,
                                             image_desc=info.path, conf=conf)
        result.handler = handler.name
    record(USED)
    LOG.info('Injected %s into %s with handler %s in %.3f s',
             request.describe(), info.path, handler.name,
             result.attempts[-1].seconds)
    return True
