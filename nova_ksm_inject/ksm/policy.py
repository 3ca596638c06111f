"""Scan-rate policies: what ksmd should do, given what the host shows.

A policy turns a :class:`Sample` (KSM counters, ksmd CPU time, guests,
hook events) into a :class:`Decision` (run, pages_to_scan,
sleep_millisecs and the reason). It has no side effects: the tuner
(tuner.py) samples, applies and logs; unit tests feed samples directly.

The adaptive policy, in short:

* **idle**: no mergeable guest; ksmd stops (``enabled=auto``).
* **boost**: something new to merge (a hook event, a new mergeable
  process, guest memory or KSM's tracked pages growing): scan as fast as
  ``cpu_budget_percent`` allows. The batch size comes from ksmd's measured
  scan rate (pages per CPU second) so that batch time over batch plus
  sleep equals the budget; without ``pages_scanned`` (Linux < 6.7) it
  follows the measured CPU multiplicatively.
* **settled**: pages merge only once their checksum is stable over two
  scans, so sharing that did not grow over two consecutive full scans
  (after at least three) is a plateau: scan all mergeable memory once per
  ``maintenance_scan_seconds`` at long sleeps, which costs next to nothing
  and still notices pages that become identical later.
"""

import dataclasses
import math

IDLE, BOOST, SETTLED, STATIC, KERNEL, DISABLED = (
    'idle', 'boost', 'settled', 'static', 'kernel', 'disabled')


@dataclasses.dataclass
class Sample(object):
    """One look at the host."""

    time: float
    full_scans: int = 0
    merged: int = 0  # pages_sharing (+ ksm_zero_pages): pages saved
    tracked: int = 0  # shared + sharing + unshared + volatile
    pages_scanned: int = None  # None before Linux 6.7
    ksmd_cpu: float = 0.0  # ksmd CPU seconds since boot
    guests: int = 0  # mergeable guests and processes
    guest_pages: int = 0  # resident pages of mergeable processes
    started: bool = False  # a hook start event or new mergeable process


@dataclasses.dataclass
class Decision(object):
    """What ksmd should do, and why (logged with its numbers)."""

    state: str
    run: int
    pages_to_scan: int = None
    sleep_millisecs: int = None
    reason: str = ''
    cpu_percent: float = None

    def knobs(self):
        knobs = {'run': self.run}
        if self.run == 1 and self.pages_to_scan is not None:
            knobs['pages_to_scan'] = self.pages_to_scan
            knobs['sleep_millisecs'] = self.sleep_millisecs
        return knobs


class AdaptivePolicy(object):
    """Boost on new memory, settle on plateau, within a CPU budget."""

    BOOST_SLEEP_MS = 20
    SETTLED_SLEEP_MS = 200
    MIN_BOOST_PAGES = 100
    MAX_PAGES = 10 ** 8
    MIN_SETTLED_PAGES = 64
    INITIAL_RATE = 500000.0  # pages per CPU second until measured
    MIN_BOOST_SCANS = 3
    PLATEAU_SCANS = 2
    # Growth that counts: more than this fraction and this many pages.
    GROWTH_FRACTION = 0.05
    GROWTH_PAGES = 4096
    # Aim a little under the budget: the kernel's sleep is not exact.
    BUDGET_MARGIN = 0.9

    def __init__(self, settings):
        self.settings = settings
        self.budget = settings.cpu_budget_percent
        self.state = None
        self.rate = self.INITIAL_RATE
        self.pages = None
        self.correction = 1.0
        self.prev = None
        self._mark = None  # (full_scans, merged) at the last full scan
        self._boost_scans = self._quiet_scans = 0
        self._baseline = (0, 0)  # (guest_pages, tracked) when settled

    def decide(self, sample):
        """The decision for ``sample``; call once per poll."""
        prev, self.prev = self.prev, sample
        cpu = self._cpu_percent(prev, sample)
        if self.settings.enabled == 'false':
            return self._enter(DISABLED, 0, 'enabled=false', cpu)
        if not sample.guests:
            if self.settings.enabled == 'auto':
                return self._enter(IDLE, 0, 'no mergeable guest', cpu)
            return self._settled(sample, cpu, 'no mergeable guest')
        growth = self._growth(sample)
        if growth or self.state in (None, IDLE, DISABLED):
            self._start_boost(sample)
            return self._boost(sample, prev, cpu, growth or 'guests found')
        if self.state == BOOST:
            plateau = self._track_scans(sample)
            if plateau:
                self._baseline = (sample.guest_pages, sample.tracked)
                return self._settled(sample, cpu, plateau)
            return self._boost(sample, prev, cpu, 'merging')
        # Follow shrinking memory down, so that it growing back counts.
        self._baseline = (min(self._baseline[0], sample.guest_pages),
                          min(self._baseline[1], sample.tracked))
        return self._settled(sample, cpu, 'plateau held')

    # -- state helpers ----------------------------------------------------
    def _enter(self, state, run, reason, cpu, pages=None, sleep=None):
        self.state = state
        self.pages = pages
        return Decision(state, run, pages, sleep, reason, cpu)

    @staticmethod
    def _cpu_percent(prev, sample):
        if prev is None or sample.time <= prev.time:
            return None
        return 100.0 * (sample.ksmd_cpu - prev.ksmd_cpu) / (
            sample.time - prev.time)

    def _growth(self, sample):
        """Why there is new memory to merge, or '' when there is none."""
        if sample.started:
            return 'guest started'
        if self.state != SETTLED:
            return ''
        pages, tracked = self._baseline
        for name, now, then in (('guest memory', sample.guest_pages, pages),
                                ('KSM tracked pages', sample.tracked,
                                 tracked)):
            if now - then > max(self.GROWTH_PAGES,
                                self.GROWTH_FRACTION * then):
                return '%s grew from %d to %d pages' % (name, then, now)
        return ''

    def _start_boost(self, sample):
        self._mark = (sample.full_scans, sample.merged)
        self._boost_scans = self._quiet_scans = 0

    def _track_scans(self, sample):
        """Count full scans; a plateau reason once sharing stops growing."""
        scans = sample.full_scans - self._mark[0]
        if scans <= 0:
            return ''
        grown = sample.merged - self._mark[1]
        self._mark = (sample.full_scans, sample.merged)
        self._boost_scans += scans
        if grown <= max(64, 0.01 * sample.merged):
            self._quiet_scans += scans
        else:
            self._quiet_scans = 0
        if (self._boost_scans >= self.MIN_BOOST_SCANS
                and self._quiet_scans >= self.PLATEAU_SCANS):
            return ('plateau: %d pages merged, grew %d over the last %d '
                    'full scans' % (sample.merged, grown, self._quiet_scans))
        return ''

    # -- knob computation -------------------------------------------------
    def _boost(self, sample, prev, cpu, reason):
        self._measure_rate(sample, prev)
        target = min(self.budget * self.BUDGET_MARGIN, 99.0)
        if self.state == BOOST:
            self._correct(cpu, target, sample)
        fraction = target / 100.0
        batch_seconds = fraction * self.BOOST_SLEEP_MS / 1000.0 / (
            1 - fraction)
        pages = self.rate * batch_seconds * self.correction
        pages = int(min(self.MAX_PAGES, max(self.MIN_BOOST_PAGES, pages)))
        return self._enter(BOOST, 1, reason, cpu, pages, self.BOOST_SLEEP_MS)

    def _correct(self, cpu, target, sample):
        """Follow the measured CPU where the rate model is off (ksmd
        sleeps longer than asked, or has no scan counter)."""
        if cpu is None:
            return
        ratio = target / max(cpu, 0.5)
        if ratio > 1 and sample.tracked and self.pages >= sample.tracked:
            return  # each batch already covers everything: no faster
        self.correction *= min(2.0, max(0.5, ratio))
        self.correction = min(10.0, max(0.1, self.correction))

    def _measure_rate(self, sample, prev):
        """ksmd's pages per CPU second, smoothed, from the last poll."""
        if prev is None or sample.pages_scanned is None:
            return
        used = sample.ksmd_cpu - prev.ksmd_cpu
        scanned = sample.pages_scanned - prev.pages_scanned
        if used >= 0.02 and scanned > 0:
            self.rate = 0.5 * self.rate + 0.5 * (scanned / used)

    def calm(self, reason):
        """The settled knobs for the last sample (when the tuner stops)."""
        return self._settled(self.prev or Sample(time=0), None, reason)

    def _settled(self, sample, cpu, reason):
        sleep = self.SETTLED_SLEEP_MS
        seconds = self.settings.maintenance_scan_seconds
        pages = math.ceil(max(sample.tracked, sample.guest_pages)
                          * sleep / 1000.0 / seconds)
        # Never above the budget, whatever the host size.
        budget = self.budget / 100.0
        cap = self.rate * budget * sleep / 1000.0 / max(1e-3, 1 - budget)
        pages = int(max(self.MIN_SETTLED_PAGES, min(pages, cap)))
        if self.state == SETTLED and self.pages and \
                abs(pages - self.pages) <= 0.25 * self.pages:
            pages = self.pages  # small drifts are not worth a write
        return self._enter(SETTLED, 1, reason, cpu, pages, sleep)


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
