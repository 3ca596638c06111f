"""Applying ``[ksm]`` once: what the hook and ``ksm apply`` share.

The tuner adjusts the scan rate continuously (policy.py); this module
decides the rest: whether ksmd runs (``enabled``), the knobs every policy
sets, and the scan rate when no tuner is there to set it.
"""

import dataclasses

from oslo_log import log as logging

from nova_ksm_inject.ksm import processes

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class ApplyResult(object):
    """What :func:`apply_configured` found and did."""

    mergeable_guests: int
    run: bool
    knobs: dict
    deferred: list


def mergeable_guest_count(statedir, proc_root=None):
    """Guests the hook recorded as mergeable, plus other processes that
    asked for merging (guests started before the hook was installed,
    non-libvirt workloads)."""
    records = [g for g in statedir.guests() if g.get('mergeable')]
    known = {g.get('pid') for g in records}
    others = set(processes.mergeable_processes(proc_root)) - known
    return len(records) + len(others)


def effective_policy(settings, sysfs, tuner_alive):
    """The configured policy, or ``static`` when it cannot work here."""
    policy = settings.policy
    if policy == 'kernel' and not sysfs.has('advisor_mode'):
        LOG.warning('policy=kernel but this kernel has no KSM advisor '
                    '(Linux 6.8+); using the static knobs')
        return 'static'
    if policy == 'adaptive' and not tuner_alive:
        LOG.warning('policy=adaptive but nova-ksm-tuner is not running; '
                    'using the static knobs until it starts')
        return 'static'
    return policy


def desired_knobs(settings, run, sysfs, tuner_alive):
    """The knobs to write for ``run`` under the configured policy."""
    if not run:
        return {'run': 0}
    knobs = settings.tree_knobs()
    policy = effective_policy(settings, sysfs, tuner_alive)
    if policy == 'static':
        knobs.update(settings.static_knobs())
    if policy == 'kernel':
        knobs['advisor_max_cpu'] = settings.cpu_budget_percent
        knobs['advisor_mode'] = 'scan-time'
    elif sysfs.has('advisor_mode'):
        # The advisor rejects a manual pages_to_scan.
        knobs['advisor_mode'] = 'none'
    knobs['run'] = 1
    return knobs


def apply_configured(settings, host, statedir, proc_root=None,
                     unmerge=False, force_run=None):
    """Bring KSM to what nova.conf asks for, now.

    :param force_run: True/False overrides ``enabled`` (``ksm enable`` /
        ``ksm disable``).
    :raises KsmUnavailable, KsmNotWritable: nothing was changed.
    """
    host.sysfs.require()
    count = mergeable_guest_count(statedir, proc_root)
    run = settings.wants_run(count) if force_run is None else force_run
    knobs = desired_knobs(settings, run, host.sysfs,
                          statedir.tuner_alive())
    statedir.save_ksm_once(host.save())
    deferred = host.apply(knobs, unmerge=unmerge)
    LOG.info('KSM %s (enabled=%s, policy=%s, %d mergeable guests)',
             'running' if run else 'stopped', settings.enabled,
             settings.policy, count)
    return ApplyResult(count, run, knobs, deferred)
