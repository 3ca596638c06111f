"""``[ksm]`` applied by nova-compute at start, through nova's connection.

nova-compute already holds a libvirt connection: the knobs libvirt's node
memory parameters cover (pages_to_scan, sleep_millisecs,
merge_across_nodes) go through it, the rest (``run``, use_zero_pages,
max_page_sharing, the advisor) through sysfs, as
:class:`nova_ksm_inject.ksm.host.KsmHost` does. The decision itself (run
or not, which knobs for the policy) is the one the hook and ``ksm apply``
make: :func:`nova_ksm_inject.ksm.control.apply_configured`. Nothing here
imports nova.
"""

from oslo_log import log as logging

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm import control
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import settings as ksm_settings
from nova_ksm_inject.ksm import statedir as ksm_statedir
from nova_ksm_inject.ksm import sysfs as ksm_sysfs

LOG = logging.getLogger(__name__)

# Hooks hold the state lock for milliseconds; a start can wait a little.
LOCK_TIMEOUT = 5.0


def apply_ksm_config(connection, conf=None):
    """Bring this hypervisor's KSM to ``[ksm]``; log and return what was done.

    The sysfs and procfs roots are the KSM modules' defaults
    (:data:`nova_ksm_inject.ksm.sysfs.KSM_ROOT`,
    :data:`nova_ksm_inject.procfs.PROC_ROOT`, read at call time), so
    tests point them at fake trees.

    :param connection: nova's open libvirt connection (never closed here:
        it is nova's), or None for sysfs only.
    :returns: :class:`nova_ksm_inject.ksm.control.ApplyResult`.
    :raises KsmUnavailable: this kernel (or container) has no KSM.
    :raises KsmNotWritable, KsmBusy: nothing was changed.
    """
    settings = ksm_settings.KsmSettings.from_conf(conf or CONF)
    host = ksm_host.KsmHost(sysfs=ksm_sysfs.KsmSysfs(),
                            connection=connection)
    host.sysfs.require()
    statedir = ksm_statedir.KsmStateDir(settings.state_dir)
    with statedir.locked(timeout=LOCK_TIMEOUT):
        result = control.apply_configured(settings, host, statedir)
    via_libvirt, via_sysfs = split_by_channel(result.knobs, connection)
    LOG.info('Applied [ksm] to this hypervisor: ksmd %(state)s '
             '(enabled=%(enabled)s, policy=%(policy)s, %(guests)d mergeable '
             'guests); libvirt node memory parameters: %(libvirt)s; sysfs '
             '%(root)s: %(sysfs)s; left unchanged: %(deferred)s',
             {'state': 'running' if result.run else 'stopped',
              'enabled': settings.enabled, 'policy': settings.policy,
              'guests': result.mergeable_guests,
              'libvirt': _format(via_libvirt), 'root': host.sysfs.root,
              'sysfs': _format(via_sysfs),
              'deferred': '; '.join('%s (%s)' % d for d in result.deferred)
              or 'nothing'})
    return result


def split_by_channel(knobs, connection):
    """({libvirt parameter: value}, {sysfs knob: value}) for ``knobs``."""
    via_libvirt, via_sysfs = {}, {}
    for name, value in sorted(knobs.items()):
        param = ksm_host.LIBVIRT_PARAMS.get(name)
        if connection is not None and param is not None:
            via_libvirt[param] = value
        else:
            via_sysfs[name] = value
    return via_libvirt, via_sysfs


def _format(values):
    return ', '.join('%s=%s' % item for item in values.items()) or 'none'
