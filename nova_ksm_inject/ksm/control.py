"""Applying ``[ksm]`` once: what the hook and ``ksm apply`` share.

The tuner adjusts the scan rate continuously (policy.py); this module
decides the rest: whether ksmd runs (``enabled``), the knobs every policy
sets, and the scan rate when no tuner is there to set it.
"""

import dataclasses

from oslo_log import log as logging

from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import processes

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class ApplyResult(object):
    """What :func:`apply_configured` found and did."""

    mergeable_guests: int
    run: bool
    knobs: dict
    deferred: list


@dataclasses.dataclass
class Guests(object):
    """Hook records matched to the processes that really run.

    ``live``: [(record, pid or None)], pid None while the guest starts;
    ``gone``: [(record, why)] records whose guest is not there any more;
    ``others``: pids of mergeable processes no live record accounts for
    (guests started before the hook was installed, other workloads).
    """

    live: list
    gone: list
    others: list

    @property
    def count(self):
        """Mergeable guests, each counted once."""
        return len(self.others) + sum(
            1 for record, _ in self.live if record.get('mergeable'))


def match_guests(records, qemu, mergeable, now, grace, proc_root=None):
    """Match hook ``records`` to running QEMU processes.

    :param qemu: {pid: QemuGuest} of the QEMU processes that run.
    :param mergeable: pids of processes with mergeable memory.
    :param now: wall-clock seconds, as records' ``since``.
    :param grace: seconds a record may go without any QEMU process.
    """
    running = {}
    for guest in qemu.values():
        running.setdefault(('name', guest.name), guest.pid)
        if guest.uuid:
            running[('uuid', guest.uuid)] = guest.pid
    live, gone = [], []
    for record in records:
        pid, why = _record_process(record, running, now, grace, proc_root)
        if why:
            gone.append((record, why))
        else:
            live.append((record, pid))
    claimed = {pid for _, pid in live if pid}
    return Guests(live, gone, sorted(set(mergeable) - claimed))


def _record_process(record, running, now, grace, proc_root):
    """(pid or None, '') for a live record, (None, why) for a gone one."""
    pid = (running.get(('uuid', record.get('uuid')))
           or running.get(('name', record.get('name'))))
    if pid:
        return pid, ''
    # Seen by the tuner (its pid namespace) or written by the hook (the
    # pid libvirt wrote): the guest ran, and its process is gone now.
    seen = record.get('qemu_pid') or record.get('pid')
    if seen and not record.get('qemu_pid') and procfs.process_matches(
            seen, proc_root=proc_root):
        return seen, ''
    if seen:
        return None, ('its QEMU process (pid %s) is gone and no release '
                      'event came' % seen)
    age = now - record.get('since', now)
    if age > grace:
        return None, ('no QEMU process %.0f s after libvirt prepared it '
                      '(guest_record_grace_seconds = %d)' % (age, grace))
    return None, ''


def mergeable_guest_count(statedir, proc_root=None, grace=120):
    """Mergeable guests: hook records whose guest runs (or is starting),
    plus other processes that asked for merging, each counted once."""
    guests = match_guests(statedir.guests(),
                          processes.qemu_guests(proc_root),
                          processes.mergeable_processes(proc_root),
                          statedir.clock(), grace, proc_root)
    return guests.count


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
    count = mergeable_guest_count(statedir, proc_root,
                                  settings.guest_record_grace_seconds)
    run = settings.wants_run(count) if force_run is None else force_run
    knobs = desired_knobs(settings, run, host.sysfs,
                          statedir.tuner_alive())
    statedir.save_ksm_once(host.save())
    deferred = host.apply(knobs, unmerge=unmerge)
    LOG.info('KSM %s (enabled=%s, policy=%s, %d mergeable guests)',
             'running' if run else 'stopped', settings.enabled,
             settings.policy, count)
    return ApplyResult(count, run, knobs, deferred)
