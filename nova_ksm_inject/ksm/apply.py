"""One-shot KSM changes (``ksm apply/enable/disable/restore``, nova's
``init_host``) as privileged jobs with plain-data results.

They run as root: in the caller when it is root, else in the
``[privsep_ksm]`` daemon (:mod:`nova_ksm_inject.privsep.client`), which reads
``[ksm]`` from its own configuration.
"""

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.ksm import control
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import settings as ksm_settings
from nova_ksm_inject.ksm import statedir as ksm_statedir
from nova_ksm_inject.ksm import sysfs as ksm_sysfs

LOG = logging.getLogger(__name__)

LOCK_TIMEOUT = 10.0


def _context(conf, connection):
    settings = ksm_settings.KsmSettings.from_conf(conf)
    if connection is not None:
        host = ksm_host.KsmHost(sysfs=ksm_sysfs.KsmSysfs(),
                                connection=connection)
    else:
        host = ksm_host.KsmHost.for_settings(settings)
    return settings, host, ksm_statedir.KsmStateDir(settings.state_dir)


def apply(conf, force_run=None, unmerge=False, connection=None):
    """Bring KSM to ``[ksm]`` now.

    :param force_run: True (enable) or False (disable) overrides
        ``enabled``; False with ``unmerge`` also unmerges every page.
    :param connection: nova's open libvirt connection (never closed here).
    :returns: ``{'run', 'policy', 'enabled', 'mergeable_guests', 'knobs',
        'deferred', 'unmerged', 'sysfs'}``.
    :raises KsmUnavailable, KsmNotWritable, KsmBusy: nothing was changed.
    """
    settings, host, statedir = _context(conf, connection)
    try:
        host.sysfs.require()
        with statedir.locked(timeout=LOCK_TIMEOUT):
            if force_run is False and unmerge:
                statedir.save_ksm_once(host.save())
                host.set_run(ksm_sysfs.RUN_UNMERGE)
                return _result(settings, host, False, 0, {'run': 2}, [],
                               unmerged=True)
            result = control.apply_configured(
                settings, host, statedir, unmerge=unmerge,
                force_run=force_run)
    finally:
        if connection is None:
            host.close()
    return _result(settings, host, result.run, result.mergeable_guests,
                   result.knobs, result.deferred)


def _result(settings, host, run, guests, knobs, deferred, unmerged=False):
    return {'run': bool(run), 'policy': settings.policy,
            'enabled': settings.enabled, 'mergeable_guests': guests,
            'knobs': dict(knobs), 'unmerged': unmerged,
            'deferred': [list(d) for d in deferred],
            'sysfs': host.sysfs.root}


def restore(conf):
    """Restore the KSM settings saved before the first change.

    :returns: ``{'restored': {knob: value}, 'deferred': [[knob, why]]}``.
    :raises NovaKsmInjectError: nothing was saved.
    """
    settings, host, statedir = _context(conf, None)
    saved = statedir.saved_ksm()
    if saved is None:
        raise exception.NovaKsmInjectError(
            'No saved KSM settings in %s: nova-ksm-inject has not changed '
            'KSM since boot (or already restored them)' % statedir.path)
    try:
        with statedir.locked(timeout=LOCK_TIMEOUT):
            deferred = host.restore(saved)
            if not deferred:
                statedir.clear_saved_ksm()
    finally:
        host.close()
    return {'restored': saved, 'deferred': [list(d) for d in deferred]}
