"""How big a ksmd batch holds a CPU target: ksmd's duty cycle, measured.

ksmd scans ``pages_to_scan`` pages, sleeps ``sleep_millisecs``, and so
on: with a batch of ``b`` CPU seconds and a sleep of ``s`` seconds it uses
``b / (b + s)`` of a core. Its cost per page varies tenfold (measured on
Linux 6.18: about 250,000 pages per CPU second while new memory merges,
over 3,000,000 once it is merged), so a rate learned in one state
overshoots in another. Three sources, best first:

* **the duty cycle just measured**: ksmd's CPU time over the last window
  (``/proc/<ksmd>/stat``) with the batch size that was set gives the
  batch that meets the target, whatever the rate or the kernel's sleep
  accuracy. Needs a window long enough to hold a few clock ticks.
* **the scan rate**: pages per CPU second, from ``pages_scanned`` (Linux
  6.7+) or, on older kernels, from full scans over time times the pages
  one full scan covers (every page KSM tracks: ``pages_shared``,
  ``pages_sharing``, ``pages_unshared``, ``pages_volatile``).
* **the rate of merging new memory** learned in earlier boosts (the
  slowest ksmd scans), used when a boost starts, so that ksmd holds the
  budget from the first second, and for the pressure state's batches, so
  that its ceiling holds whatever pages ksmd walks through.
"""

MIN_WINDOW_CPU = 0.04  # ksmd CPU seconds (4 ticks) to trust a window
# ... and wall seconds: a boost looks every 0.05 s, and a batch outlasts
# such a window (a duty cycle that looks saturated cuts the batch).
MIN_WINDOW_SECONDS = 0.25
MAX_WINDOW_SECONDS = 60.0
MIN_RATE_CPU = 0.02
FULL_SCANS_CPU = 0.2  # 20 ticks: a rate from full scans within ~5%


def duty_batch_seconds(percent, sleep_ms):
    """Batch CPU seconds for ``percent`` of a core with ``sleep_ms``."""
    fraction = min(max(percent, 0.01), 99.0) / 100.0
    return fraction * sleep_ms / 1000.0 / (1 - fraction)


class ScanRate(object):
    """Learns ksmd's cost, window by window, and sizes its batches."""

    # Pages per CPU second of new memory, a little under the ~250,000
    # measured on a 2-core Linux 6.18 VM: the first batch of a boost.
    INITIAL_RATE = 200000.0
    # The cheapest pages (merged ones) seen there: ~4,000,000 a CPU second.
    FAST_RATE = 4000000.0
    MAX_STEP = 4.0  # a window grows the batch at most fourfold
    # A duty cycle this close to a whole core says the batch outlasted
    # the window, not by how much: the batch time it implies can be
    # 100x too long, and cutting by that starves the boost for a second
    # (a 272,432-page batch went to 1,748 and the boost averaged 54% of
    # a core against 63%), and the windows after it are saturated too,
    # while the batch in flight ends. Such a window cuts to the batch
    # that holds the target on the costliest pages, or by half when the
    # batch is that already.
    SATURATED = 0.97
    # ksmd reads pages_to_scan once per batch: a batch must stay short
    # even when ksmd is starved of CPU (its duty cycle then looks low).
    MAX_BATCH_FACTOR = 2.0

    def __init__(self):
        self.rate = self.INITIAL_RATE
        self.merge_rate = self.INITIAL_RATE
        self.fast_rate = self.FAST_RATE
        self.source = 'initial guess'
        self._boost_min = None
        self._window = None  # (time, cpu, pages_scanned, pages, sleep_ms)
        self._scan_mark = None  # (full_scans, cpu) at a full-scan boundary
        self.duty = None  # (pages, fraction of a core, sleep) measured

    def restart(self, sample, pages, sleep_ms):
        """New knobs from ``sample`` on: measure them on their own (the
        last measured duty cycle stands until then)."""
        self._window = (sample.time, sample.ksmd_cpu, sample.pages_scanned,
                        pages, sleep_ms)

    def observe(self, sample):
        """Account a new sample to the current window and the rate."""
        self._rate_from_full_scans(sample)
        if self._window is None:
            return
        t0, cpu0, scanned0, pages, sleep_ms = self._window
        used, elapsed = sample.ksmd_cpu - cpu0, sample.time - t0
        if elapsed < MIN_WINDOW_SECONDS or (used < MIN_WINDOW_CPU
                                            and elapsed < MAX_WINDOW_SECONDS):
            return
        if used >= MIN_RATE_CPU and None not in (sample.pages_scanned,
                                                 scanned0):
            self._learn(max(1, sample.pages_scanned - scanned0) / used,
                        'pages_scanned')
        if pages:
            self.duty = (pages, used / elapsed, sleep_ms)
        self._window = (sample.time, sample.ksmd_cpu, sample.pages_scanned,
                        pages, sleep_ms)

    def _rate_from_full_scans(self, sample):
        """Before 6.7: pages one full scan covers, over its CPU time."""
        if sample.pages_scanned is not None:
            return
        mark = self._scan_mark
        if mark is None or sample.full_scans < mark[0]:
            self._scan_mark = (sample.full_scans, sample.ksmd_cpu)
            return
        scans = sample.full_scans - mark[0]
        used = sample.ksmd_cpu - mark[1]
        # Whole scans, over enough clock ticks to be more than noise.
        if scans <= 0 or used < FULL_SCANS_CPU:
            return
        self._scan_mark = (sample.full_scans, sample.ksmd_cpu)
        if sample.tracked > 0:
            self._learn(scans * sample.tracked / used, 'full scans')

    def _learn(self, measured, source):
        self.rate = 0.5 * self.rate + 0.5 * measured
        self.fast_rate = max(self.fast_rate, measured)
        self.source = source
        self._boost_min = (measured if self._boost_min is None
                           else min(self._boost_min, measured))

    def start_boost(self):
        """A boost starts: assume new memory, the costliest to scan."""
        self.rate = min(self.rate, self.merge_rate)
        self._boost_min = None
        self.duty = None  # measured on other memory, at other knobs

    def end_boost(self):
        """Remember the slowest rate of this boost for the next one."""
        if self._boost_min is not None:
            self.merge_rate = 0.5 * self.merge_rate + 0.5 * self._boost_min
        self._boost_min = None

    def pages_for(self, percent, sleep_ms):
        """The batch that holds ``percent`` of a core with ``sleep_ms``."""
        batch = duty_batch_seconds(percent, sleep_ms)
        longest = self.MAX_BATCH_FACTOR * self.fast_rate * batch
        return min(self._pages_for(percent, sleep_ms, batch), longest)

    def costly_pages_for(self, percent, sleep_ms):
        """The batch that holds ``percent`` of a core even if every page
        costs what merging new memory does (the slowest rate learned): a
        ceiling that holds wherever ksmd's walk is."""
        return self.merge_rate * duty_batch_seconds(percent, sleep_ms)

    def _pages_for(self, percent, sleep_ms, batch):
        model = self.rate * batch
        if not self.duty:
            return model
        pages, fraction, measured_sleep = self.duty
        fraction = min(max(fraction, 1e-4), 0.99)
        # b/(b+s) measured with `pages` and `measured_sleep`: the batch
        # time of one page, and the batch that meets the target.
        per_page = duty_batch_seconds(100 * fraction, measured_sleep) / pages
        # Down at once (the budget); up at most MAX_STEP a window.
        wanted = min(batch / per_page, pages * self.MAX_STEP)
        if fraction >= self.SATURATED:
            wanted = max(wanted, min(pages / 2.0, self.merge_rate * batch))
        return wanted
