"""Loading image handlers by name through stevedore.

Names are checked against the installed entry points before anything is
imported, so a typo in ``img_handlers`` fails loudly (listing the valid
names) instead of silently dropping a handler.
"""

import importlib.metadata

from oslo_log import log as logging

from nova_ksm_inject import exception

LOG = logging.getLogger(__name__)

NAMESPACE = 'nova_ksm_inject.image_handlers'


def available_handlers():
    """Names installed in the handler namespace, without importing them."""
    eps = importlib.metadata.entry_points(group=NAMESPACE)
    return sorted({ep.name for ep in eps})


def validate_handler_names(names):
    """Raise UnknownHandler unless every name is installed.

    Called at startup (commands, nova-compute's init_host) and by the
    privileged side for every job.
    """
    valid = available_handlers()
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise exception.UnknownHandler(
            names=', '.join(str(n) for n in unknown) or '(empty list)',
            namespace=NAMESPACE, valid=', '.join(valid))


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


def load(names, conf):
    """Instantiate the handlers ``names``, in that order."""
    from stevedore import named  # imported only when a job runs

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
