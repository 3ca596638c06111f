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
from nova_ksm_inject.ksm import apply as ksm_apply
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.privsep import client

LOG = logging.getLogger(__name__)


def apply_ksm_config(connection, conf=None):
    """Bring this hypervisor's KSM to ``[ksm]``; log and return what was done.

    As root (and in tests) the knobs libvirt covers go through nova's
    connection. An unprivileged nova-compute changes nothing and needs no
    sudo rule for KSM: the knobs belong to the root-side services, the
    libvirt hook (at every guest start and stop) and ``nova-ksm-tuner``;
    it says so once and returns None. The sysfs and procfs roots are the
    KSM modules' defaults, read at call time, so tests point them at fake
    trees.

    :param connection: nova's open libvirt connection (never closed here:
        it is nova's), or None for sysfs only.
    :returns: the result dict of :func:`nova_ksm_inject.ksm.apply.apply`,
        or None when not root.
    :raises KsmUnavailable: this kernel (or container) has no KSM.
    :raises KsmNotWritable, KsmBusy: nothing was changed.
    """
    conf = conf or CONF
    if not client.is_root():
        LOG.info('KSM is left to the libvirt hook and nova-ksm-tuner, which '
                 'run as root and apply [ksm]; nova-compute decides only '
                 'which guests may share (domain XML)')
        return None
    result = ksm_apply.apply(conf, connection=connection)
    via_libvirt, via_sysfs = split_by_channel(result['knobs'], connection)
    LOG.info('Applied [ksm] to this hypervisor: ksmd %(state)s '
             '(enabled=%(enabled)s, policy=%(policy)s, %(guests)d mergeable '
             'guests); libvirt node memory parameters: %(libvirt)s; sysfs '
             '%(root)s: %(sysfs)s; left unchanged: %(deferred)s',
             {'state': 'running' if result['run'] else 'stopped',
              'enabled': result['enabled'], 'policy': result['policy'],
              'guests': result['mergeable_guests'],
              'libvirt': _format(via_libvirt), 'root': result['sysfs'],
              'sysfs': _format(via_sysfs),
              'deferred': '; '.join('%s (%s)' % tuple(d)
                                    for d in result['deferred'])
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
