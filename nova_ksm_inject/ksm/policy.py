"""Scan-rate policies: what ksmd should do, given what the host shows.

A policy turns a :class:`Sample` (KSM counters, ksmd CPU time, guests,
hook events, memory) into a :class:`Decision` (run, pages_to_scan,
sleep_millisecs, smart_scan, when to look again, and the reason). It has
no side effects: the tuner (tuner.py) samples, applies and logs; unit
tests feed samples directly.

The adaptive policy, in short:

* **idle**: no mergeable guest; ksmd stops (``enabled=auto``).
* **boost**: a guest started (a hook event, a new mergeable process):
  scan as fast as ``cpu_budget_percent`` allows, from the first batch on
  (scanrate.py), looking again every 0.05 s; a boost ends on a
  plateau (after three full scans at least) or, for a guest's start, as
  soon as every guest page was visited twice (coverage.py; one that
  merged nothing while smart_scan skipped pages, which may hold the
  twins, or merged some with an older guest's unmerged pages, whose
  others it may have skipped, first visits those with smart_scan off for
  a full scan). A
  guest's start leaves ``smart_scan`` on, as
  the kernel's default (and static-max) has it: a new guest's pages are
  young and never skipped, while the pages of older guests that never
  merged are, so a full scan does not grow with the memory that came
  before (with it off, each wave's boost rescanned every unique page of
  every earlier guest at the cost of new memory, and took longer each
  wave). A boost on memory that grew in running guests turns it off:
  their pages are old, and would be skipped.
* **follow**: the memory of running guests grew (a guest boots, works):
  scan the new pages three times within 15 s (signals.Growth): three
  full scans, as many pages as ksmd visits in one (``pages_scanned`` per
  full scan: the pages ``smart_scan`` does not skip), and at least in
  proportion to the growth, never above the budget (in proportion to
  the growth alone covers a full scan only when ``smart_scan`` skips the
  older pages). Once it stopped growing for 15 s, a boost merges what
  settled in it. What settles
  later is left to the settled scan: no second looks, which cost a
  boost's worth of CPU each and, on real guests, found nothing (their
  missing saving was on the zero page, see bench/zeropages.py).
* **settled**: pages merge only once their checksum is stable over two
  scans, so sharing that grew by less than 5% (and fell by less than 2%)
  in a full scan, after at least three, is a plateau, unless guest memory
  was still arriving: a full scan in which the guests' resident memory
  grew by over 5% is not quiet, nor is the one after it (pages written
  late in a scan are first seen by the next and merge in the one after
  that). On a plateau: scan all mergeable
  memory once per ``maintenance_scan_seconds`` at most, with
  ``smart_scan`` on, and never above ``settled_cpu_percent`` of a core,
  whatever the host's memory.
* **pressure**: settled, on a host short of memory (``MemAvailable``
  under ``pressure_memavailable_percent``, or PSI memory stalls): scan up
  to ``pressure_cpu_budget_percent``, in batches sized for the costliest
  pages (the rate of merging new memory), so that the ceiling holds
  wherever ksmd's walk is.
* **loss**: KSM's profit (``general_profit``, or the same estimated on
  older kernels, see signals.py) stayed negative over full scans: merging
  costs more memory than it saves, so ksmd stops (and with
  ``unmerge_on_loss`` unmerges, when memory allows) until new memory
  arrives.
"""

import dataclasses
import math

from nova_ksm_inject.ksm import coverage
from nova_ksm_inject.ksm import scanrate
from nova_ksm_inject.ksm import signals

IDLE, BOOST, FOLLOW, SETTLED, PRESSURE, LOSS, STATIC, KERNEL, DISABLED = (
    'idle', 'boost', 'follow', 'settled', 'pressure', 'loss', 'static',
    'kernel', 'disabled')


@dataclasses.dataclass
class Sample(object):
    """One look at the host."""

    time: float
    full_scans: int = 0
    merged: int = 0  # pages_sharing (+ ksm_zero_pages): pages saved
    tracked: int = 0  # shared + sharing + unshared + volatile
    pages_scanned: int = None  # None before Linux 6.7
    ksmd_cpu: float = 0.0  # ksmd CPU seconds since boot
    # seconds: a clock tick (stat), or 1e-9 (schedstat)
    ksmd_cpu_resolution: float = scanrate.TICK_SECONDS
    guests: int = 0  # mergeable guests and processes
    guest_pages: int = 0  # resident pages of mergeable processes
    # ... of their mergeable pages, those ksmd has visited none yet (less
    # their ksm_rmap_items, Linux 6.1+); None: unknown
    unvisited: int = None
    pages_skipped: int = None  # smart_scan's skips (Linux 6.7+)
    # {pid: ksm_merging_pages} of the mergeable processes (None: unknown)
    process_merging: dict = None
    started: bool = False  # a hook start event or new mergeable process
    profit: int = None  # bytes KSM saves net of its metadata (signals.py)
    profit_source: str = 'general_profit'
    mem_available: int = None  # KiB (/proc/meminfo)
    mem_total: int = None  # KiB
    psi_some: float = None  # PSI memory "some" avg10, percent; None: no PSI


@dataclasses.dataclass
class Decision(object):
    """What ksmd should do, and why (logged with its numbers)."""

    state: str
    run: int
    pages_to_scan: int = None
    sleep_millisecs: int = None
    reason: str = ''
    cpu_percent: float = None
    smart_scan: int = None  # None: leave it
    poll_seconds: float = None  # None: the configured poll_interval

    def knobs(self):
        knobs = {'run': self.run}
        if self.run == 1 and self.pages_to_scan is not None:
            knobs['pages_to_scan'] = self.pages_to_scan
            knobs['sleep_millisecs'] = self.sleep_millisecs
        if self.run == 1 and self.smart_scan is not None:
            knobs['smart_scan'] = self.smart_scan
        return knobs


class AdaptivePolicy(object):
    """Boost on new memory, settle on plateau, stop at a loss."""

    BOOST_SLEEP_MS = 20
    # ksmd reads pages_to_scan once per batch, so a batch is as long as a
    # cut, a boost's end or a new guest's boost waits. Up to a budget of
    # about 75% of a core, the 20 ms sleep keeps a boost's batch under
    # this many CPU seconds; above it the sleep shrinks instead, so that
    # a batch stays this short (at cpu_budget_percent = 100 the batch
    # between 20 ms sleeps was up to 2 s of ksmd's CPU: 931,503 pages).
    MAX_BOOST_BATCH_SECONDS = 0.05
    SETTLED_SLEEP_MS = 200
    BOOST_POLL_SECONDS = 0.05
    MIN_BOOST_PAGES = 100
    MAX_PAGES = 10 ** 8
    MIN_SETTLED_PAGES = 64
    MIN_BOOST_SCANS = 3
    PLATEAU_SCANS = 1
    # A full scan that merged less than this share more is quiet: what
    # still comes (a guest booting) is followed at a cost in proportion.
    QUIET_FRACTION = 0.05
    # ... and one in which it fell by more than this share is memory
    # still being written.
    FALL_FRACTION = 0.02
    # After a loss, memory must grow by half before the tuner looks again
    # (a new guest always counts).
    LOSS_GROWTH_FRACTION = 0.5
    # Aim a little under a ceiling: ksmd's cost changes between looks.
    BUDGET_MARGIN = 0.9
    # ... and closer while boosting, where every point of the budget is
    # time to merge (the boost's duty cycle is measured every tenth of a
    # second, a quarter where ksmd's CPU time comes in clock ticks, and
    # saturated windows no longer starve it, scanrate.py).
    BOOST_MARGIN = 0.95
    # A boost that fell short of it catches up (scanrate.py), a little
    # over the budget for a second at most: never more than this over.
    CATCH_UP_POINTS = 5

    def __init__(self, settings):
        self.settings = settings
        self.budget = settings.cpu_budget_percent
        self.state = None
        self.pages = None
        self.prev = None
        self.scan = scanrate.ScanRate()
        self.pressure = signals.Pressure(settings)
        self.profit = signals.Profit(settings)
        self._mark = None  # (full_scans, merged) at the last full scan
        # (full_scans, pages_scanned) at the look after a full scan ended,
        # and the pages ksmd visits in a full scan (None: not measured).
        self._pass_mark, self.pass_pages = None, None
        self._boost_scans = self._quiet_scans = 0
        # Guest memory at the last full scan, and whether it grew then.
        self._rss_mark, self._arrived = 0, False
        self.growth = signals.Growth()
        self._knobs = None  # (run, pages_to_scan, sleep) last decided
        self._smart_boost = True  # the boost leaves smart_scan on
        self.coverage = coverage.Coverage()
        self._seen_at = {}  # pid: full scans when first seen mergeable
        self._new_pids = set()  # ... of those, the ones the last look found
        self._seen_any = False  # whether a look has listed processes

    def decide(self, sample):
        """The decision for ``sample``; call once per poll."""
        self.scan.observe(sample)
        self._measure_pass(sample)
        self._note_processes(sample)
        decision = self._decide(sample)
        knobs = (decision.run, decision.pages_to_scan,
                 decision.sleep_millisecs)
        if knobs != self._knobs:
            # ksmd's duty cycle is measured per setting.
            self._knobs = knobs
            self.scan.restart(sample, decision.run == 1 and
                              decision.pages_to_scan,
                              decision.sleep_millisecs)
        return decision

    def _decide(self, sample):
        prev, self.prev = self.prev, sample
        cpu = self._cpu_percent(prev, sample)
        if self.settings.enabled == 'false':
            return self._enter(DISABLED, 0, 'enabled=false', cpu)
        if not sample.guests:
            if self.settings.enabled == 'auto':
                return self._enter(IDLE, 0, 'no mergeable guest', cpu)
            return self._settled(sample, cpu, 'no mergeable guest')
        if sample.started or self.state in (None, IDLE, DISABLED):
            self._start_boost(sample, smart=True)
            return self._boost(sample, cpu, 'guest started'
                               if sample.started else 'guests found')
        grew = ''
        if self.state == LOSS:
            # Merging did not pay: only much more memory is worth a look.
            grew = self.growth.grown(sample, self.LOSS_GROWTH_FRACTION)
        elif self.state != BOOST:
            grew = self.growth.grown(sample)
        if self.state == LOSS:
            if grew:  # new memory may pay: look again, at full speed
                self._start_boost(sample)
                return self._boost(sample, cpu, grew)
            return self._loss(sample, cpu, self.profit.verdict)
        self._note_coverage(sample)
        verdict = self._track_scans(sample)
        if verdict and self.profit.losing(sample):
            return self._loss(sample, cpu, self.profit.verdict)
        if self.state == BOOST:
            if not verdict:
                return self._boost(sample, cpu, self._merging_reason())
            self.scan.end_boost()
            self.growth.reset(sample)
            return self._settled(sample, cpu, verdict)
        if not grew:
            self.growth.shrink_with(sample)
            if self.state == FOLLOW and not self.growth.rate(sample.time):
                # The new memory stopped growing: what settled in it can
                # merge now; a few full scans at the budget take it.
                self._start_boost(sample)
                return self._boost(sample, cpu,
                                   'guest memory stopped growing')
        return self._settled(sample, cpu, grew or self._calm_reason())

    def _calm_reason(self):
        if self.state == FOLLOW:
            return 'following new memory'
        return 'plateau held'

    # -- state helpers ----------------------------------------------------
    def _enter(self, state, run, reason, cpu, pages=None, sleep=None,
               **extra):
        self.state = state
        self.pages = pages
        return Decision(state, run, pages, sleep, reason, cpu, **extra)

    @staticmethod
    def _cpu_percent(prev, sample):
        if prev is None or sample.time <= prev.time:
            return None
        return 100.0 * (sample.ksmd_cpu - prev.ksmd_cpu) / (
            sample.time - prev.time)

    def _start_boost(self, sample, smart=False):
        """``smart``: ``smart_scan`` may stay on (new guests only)."""
        if self.state != BOOST:
            self.scan.start_boost(sample)
            self.pages = None
            self._smart_boost = smart
        else:
            self._smart_boost = self._smart_boost and smart
        self._mark = (sample.full_scans, sample.merged)
        self._boost_scans = self._quiet_scans = 0
        self._rss_mark, self._arrived = sample.guest_pages, False
        self.coverage.reset(sample if smart else None, self._before(sample))
        self.profit.reset()

    def _note_processes(self, sample):
        """When ksmd was first seen with each mergeable process."""
        pids = sample.process_merging
        if pids is None:
            return
        # The processes of the first look (a tuner started on a busy
        # host) may have been through any number of full scans: as many
        # as there were, up to enough to be older.
        first = sample.full_scans if self._seen_any else max(
            0, sample.full_scans - coverage.OLD_SCANS)
        self._new_pids = set(pids) - set(self._seen_at) \
            if self._seen_any else set()
        self._seen_any = True
        self._seen_at = {pid: self._seen_at.get(pid, first) for pid in pids}

    def _before(self, sample):
        """{pid: full scans when first seen} of the processes that ran
        before this look (not the ones it found new): those whose pages
        smart_scan may skip during a boost (coverage.py)."""
        return {pid: seen for pid, seen in self._seen_at.items()
                if pid not in self._new_pids}

    def _merging_reason(self):
        unskipping = self._smart_boost and self.coverage.unskipping
        return self.coverage.unskip_reason if unskipping else 'merging'

    def _note_coverage(self, sample):
        """Count a start's boost's passes from every page's first visit
        (a boost on old memory, smart_scan off, waits for a plateau)."""
        if self.state == BOOST and self._smart_boost:
            self.coverage.note(sample)
            self.coverage.note_older_twins(sample)

    def _track_scans(self, sample):
        """Count full scans; a plateau reason once sharing stops growing."""
        scans = sample.full_scans - self._mark[0]
        if scans < 0:
            # run=2 (someone unmerged) restarts the kernel's count.
            self._mark = (sample.full_scans, sample.merged)
        if scans <= 0:
            return ''
        grown = sample.merged - self._mark[1]
        self._mark = (sample.full_scans, sample.merged)
        self.profit.full_scan(sample)
        self._boost_scans += scans
        arriving = self._memory_arriving(sample)
        # Sharing that fell is memory being rewritten (a guest filling
        # pages KSM merged while they were still zero): not a plateau,
        # unless by no more than pages rewritten all the time would do.
        quiet = -max(64, self.FALL_FRACTION * sample.merged) <= grown <= max(
            64, self.QUIET_FRACTION * sample.merged)
        if arriving or not quiet:
            self._quiet_scans = 0
        else:
            # The scan after memory arrived only saw its checksums.
            self._quiet_scans += scans - 1 if self._arrived else scans
        self._arrived = arriving
        verdict = ''
        if (self._boost_scans >= self.MIN_BOOST_SCANS
                and self._quiet_scans >= self.PLATEAU_SCANS):
            verdict = ('plateau: %d pages merged, grew %d over the last %d '
                       'full scans' % (sample.merged, grown,
                                       self._quiet_scans))
        elif self.coverage.visited_twice(sample):
            verdict = ('every guest page visited twice: %d pages merged, '
                       'grew %d over the last full scan'
                       % (sample.merged, grown))
        # Only a boost about to end (new pages visited twice) can tell
        # that it merged nothing: the first full scans never merge.
        if (verdict or self.coverage.unskipping) and self.state == BOOST \
                and self._smart_boost \
                and self.coverage.waiting_for_skipped(sample, grown):
            return ''
        return verdict

    def _measure_pass(self, sample):
        """The pages ksmd visits in a full scan, from the first look
        after one full scan's end to the first after the next's."""
        if sample.pages_scanned is None:
            return
        mark = self._pass_mark
        if mark is not None and sample.full_scans == mark[0]:
            return
        if (mark is not None and sample.full_scans > mark[0]
                and sample.pages_scanned >= mark[1]):
            self.pass_pages = ((sample.pages_scanned - mark[1])
                               / (sample.full_scans - mark[0]))
        self._pass_mark = (sample.full_scans, sample.pages_scanned)

    def _follow_rate(self, sample, growth_rate):
        """Pages per second that scan the followed memory three times
        within 15 s: three full scans, or the growth's own rate."""
        passes = signals.Growth.FOLLOW_SCANS / signals.Growth.FOLLOW_SECONDS
        pages = self.pass_pages
        if pages is None:  # before Linux 6.7: every page a full scan
            pages = max(sample.tracked, sample.guest_pages)
        return max(growth_rate, passes * pages)

    def _memory_arriving(self, sample):
        """Whether the guests' resident memory grew by over 5% (and 16
        MiB) since the last full scan: pages still being written."""
        then, self._rss_mark = self._rss_mark, sample.guest_pages
        return signals.Growth.significant(sample.guest_pages, then,
                                          self.QUIET_FRACTION)

    # -- knob computation -------------------------------------------------
    def _batch(self, percent, sleep, floor, ceiling, target=None):
        return int(min(ceiling, max(floor, self.scan.pages_for(
            percent, sleep, target))))

    def _boost(self, sample, cpu, reason):
        target = self.budget * self.BOOST_MARGIN
        sleep = self.boost_sleep_ms(target)
        # Catching up never asks for a batch over twice the longest.
        most = min(self.budget + self.CATCH_UP_POINTS, scanrate.duty_percent(
            2 * self.MAX_BOOST_BATCH_SECONDS, sleep))
        aim = self.scan.catch_up(target, most)
        pages = self._batch(aim, sleep, self.MIN_BOOST_PAGES,
                            self.MAX_PAGES, target)
        smart = self._smart_boost and not self.coverage.unskipping
        return self._enter(BOOST, 1, reason, cpu, pages, sleep,
                           smart_scan=int(smart),
                           poll_seconds=self.BOOST_POLL_SECONDS)

    @classmethod
    def boost_sleep_ms(cls, percent):
        """The boost's sleep for ``percent`` of a core: 20 ms, or less
        where a batch between 20 ms sleeps would be over
        :attr:`MAX_BOOST_BATCH_SECONDS` (the kernel sleeps at least a
        jiffy: 1-10 ms, measured as slept, see scanrate.py)."""
        sleep = cls.BOOST_SLEEP_MS
        if scanrate.duty_batch_seconds(percent, sleep) <= \
                cls.MAX_BOOST_BATCH_SECONDS:
            return sleep
        return max(1, int(round(scanrate.duty_sleep_ms(
            percent, cls.MAX_BOOST_BATCH_SECONDS))))

    def calm(self, reason):
        """The settled knobs for the last sample (when the tuner stops)."""
        self.pressure.active = False
        return self._settled(self.prev or Sample(time=0), None, reason)

    def _settled(self, sample, cpu, reason):
        sleep = self.SETTLED_SLEEP_MS
        seconds = self.settings.maintenance_scan_seconds
        want = math.ceil(max(sample.tracked, sample.guest_pages)
                         * sleep / 1000.0 / seconds)
        follow = self.growth.rate(sample.time)
        if follow:
            state, ceiling = FOLLOW, self.budget
            want += math.ceil(self._follow_rate(sample, follow)
                              * sleep / 1000.0)
        elif self.pressure.check(sample):
            ceiling = self.settings.pressure_cpu_budget_percent
            # As fast as the pressure budget allows when every page is
            # costly: merged pages cost a tenth of pages being rewritten,
            # and a batch sized on one kind overshoots on the other.
            want = self.scan.costly_pages_for(
                ceiling * self.BUDGET_MARGIN, sleep)
            state, reason = PRESSURE, self.pressure.reason
        else:
            state, ceiling = SETTLED, self.settings.settled_cpu_percent
        cap = self._batch(ceiling * self.BUDGET_MARGIN, sleep,
                          self.MIN_SETTLED_PAGES, self.MAX_PAGES)
        pages = int(max(self.MIN_SETTLED_PAGES, min(want, cap)))
        if self.state == state and self.pages and self.pages <= cap and \
                abs(pages - self.pages) <= 0.25 * self.pages:
            # Small drifts are not worth a write (one that holds ksmd
            # over its ceiling is).
            pages = self.pages
        return self._enter(state, 1, reason, cpu, pages, sleep,
                           smart_scan=1)

    def _loss(self, sample, cpu, verdict):
        if self.state != LOSS:
            self.growth.reset(sample)
        else:
            self.growth.shrink_with(sample)
        run, why = self.profit.stop_run(sample)
        return self._enter(LOSS, run, '%s; %s' % (verdict, why), cpu)


class FixedPolicy(object):
    """``static`` and ``kernel``: fixed knobs, ksmd run per ``enabled``."""

    def __init__(self, settings, state):
        self.settings = settings
        self.state = state

    def decide(self, sample):
        run = self.settings.wants_run(sample.guests)
        reason = '%d mergeable guests, enabled=%s' % (
            sample.guests, self.settings.enabled)
        state = self.state if run else (
            DISABLED if self.settings.enabled == 'false' else IDLE)
        return Decision(state, int(run), reason=reason)
