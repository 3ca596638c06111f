"""The tuner loop: sample, decide, apply, publish, log.

Side effects live here (sysfs or libvirt writes through :class:`KsmHost`,
the state directory); the decisions live in policy.py. The clock, the
sleeper, the sysfs tree and the procfs root are injectable so unit tests
run the loop against fake trees without waiting.
"""

import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import control
from nova_ksm_inject.ksm import coverage
from nova_ksm_inject.ksm import policy as ksm_policy
from nova_ksm_inject.ksm import processes
from nova_ksm_inject.ksm import signals

LOG = logging.getLogger(__name__)


def make_policy(settings, sysfs):
    """The policy object for ``[ksm] policy``."""
    name = control.effective_policy(settings, sysfs, tuner_alive=True)
    if name == 'adaptive':
        return ksm_policy.AdaptivePolicy(settings)
    return ksm_policy.FixedPolicy(
        settings, ksm_policy.KERNEL if name == 'kernel'
        else ksm_policy.STATIC)


class Tuner(object):
    """Keeps one host's KSM in line with its guests.

    :param clock: monotonic seconds; :param sleeper: waits N seconds
        (``threading.Event.wait`` in the daemon, so SIGTERM is prompt).
    :param priority: a :class:`processes.KsmdPriority`; by default
        ksmd's own, except under a fake ``proc_root``, where the tuner
        never changes a priority.
    """

    LOCK_TIMEOUT = 2.0
    EVENT_POLL = 0.1
    LOGGED = ('run', 'pages_to_scan', 'sleep_millisecs', 'smart_scan',
              'advisor_mode')

    def __init__(self, settings, host, statedir, clock=time.monotonic,
                 sleeper=time.sleep, proc_root=None, priority=None):
        self.settings = settings
        self.host = host
        self.sysfs = host.sysfs
        self.statedir = statedir
        self.clock = clock
        self.sleeper = sleeper
        self.proc_root = proc_root
        self.policy = make_policy(settings, self.sysfs)
        self.ksmd = processes.KsmdCpu(clock, proc_root)
        if priority is None and proc_root is None and self.ksmd.pid:
            priority = processes.KsmdPriority(self.ksmd.pid)
        self.priority = priority
        self._nice = None  # the statedir record while ksmd's is raised
        self.watcher = processes.MergeableWatcher(proc_root)
        self.generation = None
        self.applied = None
        self.decision = None
        self._values = {}
        self._own = {}  # pid: (when, resident pages that are not mergeable)

    def start(self):
        """Save the host's KSM settings and publish that the tuner runs."""
        self.sysfs.require()
        self.statedir.save_ksm_once(self.host.save())
        self.generation = self.statedir.event().get('generation', 0)
        found = self.statedir.saved_ksmd_nice()
        if found is not None:
            self._put_nice_back(found, 'a tuner before this one was killed '
                                'during a boost')
        self._publish(ksm_policy.IDLE, 'starting')
        LOG.info('nova-ksm-tuner started: policy=%s enabled=%s '
                 'cpu_budget=%d%% poll=%.1fs', self.settings.policy,
                 self.settings.enabled, self.settings.cpu_budget_percent,
                 self.settings.poll_interval)

    def sample(self):
        """One look at KSM, ksmd, the hook's events and the processes."""
        values = self._values = self.sysfs.read_all()
        new_pids = self.watcher.poll()
        event = self.statedir.event()
        started = bool(new_pids)
        if event.get('generation', 0) != self.generation:
            self.generation = event.get('generation', 0)
            started = started or event.get('kind') == 'start'
        guests = self._guests()
        profit, source = signals.profit(values, self._process_stats())
        memory = self._memory()
        resident, unvisited, merging = self._coverage()
        return ksm_policy.Sample(
            time=self.clock(),
            full_scans=values.get('full_scans', 0),
            merged=values.get('pages_sharing', 0)
            + values.get('ksm_zero_pages', 0),
            tracked=sum(values.get(k, 0) for k in (
                'pages_shared', 'pages_sharing', 'pages_unshared',
                'pages_volatile')),
            pages_scanned=values.get('pages_scanned'),
            ksmd_cpu=self.ksmd.total(),
            ksmd_cpu_resolution=self.ksmd.resolution,
            guests=guests.count,
            guest_pages=resident, unvisited=unvisited,
            process_merging=merging,
            pages_skipped=values.get('pages_skipped'),
            started=started, profit=profit, profit_source=source,
            mem_available=memory.get('MemAvailable'),
            mem_total=memory.get('MemTotal'),
            psi_some=(procfs.memory_pressure(self.proc_root)
                      or {}).get('some'))

    def _guests(self):
        """Hook records matched to the QEMU processes that run; records
        whose guest is gone are forgotten (a lost release event)."""
        guests = control.match_guests(
            self.statedir.guests(), self.watcher.qemu,
            self.watcher.mergeable, self.statedir.clock(),
            self.settings.guest_record_grace_seconds, self.proc_root)
        self.statedir.reconcile(guests)
        return guests

    def _process_stats(self):
        """Fresh ksm_stat of the mergeable processes, when the kernel has
        no general_profit (before 6.4) and the profit is estimated."""
        if 'general_profit' in self._values:
            return []
        return [stats for stats in (
            procfs.ksm_stat(pid, self.proc_root)
            for pid in self.watcher.mergeable) if stats]

    def _memory(self):
        try:
            return procfs.meminfo(self.proc_root)
        except procfs.ProcError as err:
            LOG.debug('No memory figures: %s', err)
            return {}

    def _coverage(self):
        """(resident pages of the mergeable processes, their mergeable
        pages ksmd has not visited yet: resident less the process's own
        memory less ``ksm_rmap_items``, Linux 6.1+, else None; and
        {pid: ksm_merging_pages}, Linux 5.19+, else None)."""
        resident, unvisited, merging = 0, 0, {}
        refresh = getattr(self.policy, 'state', None) == ksm_policy.BOOST
        pids = self.watcher.mergeable
        for pid in pids:
            pages = procfs.resident_pages(pid, self.proc_root)
            resident += pages
            stats = procfs.ksm_stat(pid, self.proc_root) or {}
            if merging is not None and isinstance(
                    stats.get('ksm_merging_pages'), int):
                merging[pid] = stats['ksm_merging_pages']
            else:
                merging = None
            items = stats.get('ksm_rmap_items')
            if not isinstance(items, int) or unvisited is None:
                unvisited = None
            else:
                own = self._own_pages(pid, pages, refresh)
                unvisited += max(0, pages - own - items)
        self._own = {pid: own for pid, own in self._own.items()
                     if pid in pids}
        return resident, unvisited, merging

    def _own_pages(self, pid, pages, refresh):
        """Resident pages of ``pid`` outside its mergeable mappings
        (QEMU's own memory): read from ``smaps`` when the process is new,
        and every OWN_MEMORY_REFRESH seconds while boosting (a page-table
        walk: a few milliseconds per GiB)."""
        now = self.clock()
        known = self._own.get(pid)
        if known is None or (refresh and now - known[0]
                             >= coverage.OWN_MEMORY_REFRESH):
            mergeable = procfs.mergeable_resident_pages(pid, self.proc_root)
            known = (now, 0 if mergeable is None
                     else max(0, pages - mergeable))
            self._own[pid] = known
        return known[1]

    def step(self):
        """Sample, decide and apply once; returns the decision."""
        sample = self.sample()
        decision = self.policy.decide(sample)
        knobs = self._knobs(decision)
        drifted = self._drifted()
        changed = knobs != self.applied or drifted
        if changed:
            # Hooks and commands write KSM too: one writer at a time.
            with self.statedir.locked(timeout=self.LOCK_TIMEOUT):
                self.host.apply(knobs)
            self.applied = knobs
        self._renice(decision.state == ksm_policy.BOOST)
        before = (getattr(self.decision, 'state', None),
                  getattr(self.decision, 'reason', None))
        if before != (decision.state, decision.reason):
            self._log(LOG.info, decision, knobs, sample)
        elif changed:
            # Boost retunes every 0.05 s: not worth an INFO line.
            self._log(LOG.debug, decision, knobs, sample)
        self.decision = decision
        self._publish(decision.state, decision.reason, sample, decision)
        return decision

    def _drifted(self):
        """Whether someone else (a hook, an operator) changed our knobs."""
        drifted = {name: self._values.get(name)
                   for name, value in (self.applied or {}).items()
                   if name in self._values
                   and str(self._values[name]) != str(value)}
        if drifted:
            LOG.info('KSM settings changed behind the tuner: %s; setting '
                     'them again', drifted)
        return bool(drifted)

    def _renice(self, boosting):
        """ksmd at ``[ksm] boost_ksmd_nice`` while a boost runs, and back
        at the nice value it had once the boost ends. Only ever raises
        ksmd's priority; when that fails, says so once and stops trying."""
        wanted = self.settings.boost_ksmd_nice
        if not boosting or self.priority is None or wanted is None:
            if not boosting and self._nice is not None:
                self._put_nice_back(self._nice, 'the boost ended')
            return
        if self._nice is not None:
            return
        try:
            found = self.priority.get()
            if found <= wanted:
                return
            # The way back is on disk before the change: a tuner killed
            # now is followed by one that puts it back at start.
            self._nice = {'pid': self.priority.pid, 'nice': found}
            self.statedir.save_ksmd_nice(**self._nice)
            self.priority.set(wanted)
        except OSError as err:
            LOG.warning('Cannot raise the priority of ksmd (pid %d): %s; '
                        'boosts get less of a core than cpu_budget_percent '
                        'under load. Run the tuner as root, or unset [ksm] '
                        'boost_ksmd_nice',
                        self.priority.pid, err.strerror or err)
            self.priority = None
            self._nice = None
            self.statedir.clear_ksmd_nice()
            return
        LOG.info('ksmd (pid %d) at nice %d while the boost runs (was %d)',
                 self.priority.pid, wanted, found)

    def _put_nice_back(self, record, why):
        """ksmd back at ``record['nice']``, if it is still the ksmd the
        record is about; the record goes either way."""
        try:
            if self.priority is not None and \
                    record['pid'] == self.priority.pid:
                self.priority.set(record['nice'])
                LOG.info('ksmd (pid %d) back at nice %d: %s',
                         record['pid'], record['nice'], why)
        except OSError as err:
            LOG.warning('Cannot put ksmd (pid %d) back at nice %d: %s; '
                        'run "renice -n %d -p %d" as root', record['pid'],
                        record['nice'], err.strerror or err, record['nice'],
                        record['pid'])
        self._nice = None
        self.statedir.clear_ksmd_nice()

    def _knobs(self, decision):
        if isinstance(self.policy, ksm_policy.AdaptivePolicy):
            knobs = decision.knobs()
            if decision.run == 1:
                knobs.update(self.settings.tree_knobs())
                if self.sysfs.has('advisor_mode'):
                    knobs['advisor_mode'] = 'none'
            return knobs
        return control.desired_knobs(self.settings, decision.run,
                                     self.sysfs, tuner_alive=True)

    def _log(self, log, decision, knobs, sample):
        log('KSM %s: %s; %s (ksmd cpu %s%%, budget %d%%, merged %d pages, '
            'tracked %d, full scans %d, profit %s MiB, %d mergeable '
            'guests)', decision.state, decision.reason,
            ' '.join('%s=%s' % (k, knobs[k]) for k in self.LOGGED
                     if k in knobs),
            'n/a' if decision.cpu_percent is None
            else '%.1f' % decision.cpu_percent,
            self.settings.cpu_budget_percent, sample.merged,
            sample.tracked, sample.full_scans,
            'n/a' if sample.profit is None
            else '%.1f' % (sample.profit / signals.MIB), sample.guests)

    def _publish(self, state, reason, sample=None, decision=None):
        data = {'state': state, 'reason': reason,
                'policy': self.settings.policy,
                'poll_interval': self.settings.poll_interval}
        if decision is not None:
            data.update(pages_to_scan=decision.pages_to_scan,
                        sleep_millisecs=decision.sleep_millisecs,
                        ksmd_cpu_percent=decision.cpu_percent)
        if sample is not None:
            data.update(merged=sample.merged, guests=sample.guests,
                        full_scans=sample.full_scans,
                        profit_bytes=sample.profit,
                        profit_source=sample.profit_source)
        if state == ksm_policy.LOSS:
            data['stopped_because'] = reason
        self.statedir.write_tuner(data)

    def run(self, should_stop):
        """Loop until ``should_stop()``; always ends with :meth:`stop`."""
        self.start()
        try:
            while not should_stop():
                try:
                    self.step()
                except exception.NovaKsmInjectError as err:
                    # Keep running: the next poll may succeed (EBUSY...).
                    LOG.error('KSM tuning failed: %s', err)
                    self.applied = None
                self.wait(getattr(self.decision, 'poll_seconds', None)
                          or self.settings.poll_interval)
        finally:
            self.stop()

    def wait(self, seconds):
        """Sleep until the next poll, or until a hook reports an event
        (checked every :attr:`EVENT_POLL` seconds: one small file read),
        so that a guest start is acted on within a tenth of a second.
        A sleeper that returns True (``threading.Event.wait``: stop was
        asked) ends the wait."""
        deadline = self.clock() + seconds
        while True:
            left = deadline - self.clock()
            if left <= 0 or self.sleeper(min(self.EVENT_POLL, left)):
                return
            if self.statedir.event().get('generation', 0) != \
                    self.generation:
                return

    def stop(self):
        """Restore the saved settings, or leave ksmd at a calm rate;
        ksmd's nice value goes back either way."""
        try:
            self._renice(False)
            saved = self.statedir.saved_ksm()
            if self.settings.restore_on_exit and saved is not None:
                deferred = self.host.restore(saved)
                if not deferred:
                    self.statedir.clear_saved_ksm()
            elif getattr(self.decision, 'state', None) == ksm_policy.BOOST:
                calm = self.policy.calm('tuner stopping')
                self.host.apply(self._knobs(calm))
        finally:
            self.statedir.write_tuner({'state': 'stopped', 'reason': 'exit',
                                       'policy': self.settings.policy})
            LOG.info('nova-ksm-tuner stopped')
