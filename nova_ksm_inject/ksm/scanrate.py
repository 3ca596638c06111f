"""How big a ksmd batch holds a CPU target: ksmd's duty cycle, measured.

ksmd scans ``pages_to_scan`` pages, sleeps ``sleep_millisecs``, and so
on: with a batch of ``b`` CPU seconds and a sleep of ``s`` seconds it uses
``b / (b + s)`` of a core. Its cost per page varies tenfold (measured on
Linux 6.18: about 250,000 pages per CPU second while new memory merges,
over 3,000,000 once it is merged), so a rate learned in one state
overshoots in another. Three sources, best first:

* **the cost of a page over the last second** (Linux 6.7+): ksmd's CPU
  time (``/proc/<ksmd>/schedstat``, else ``stat``) over the pages it
  scanned, and the sleeps as it slept them, over the windows of the last
  second: the batch that meets the target over any stretch of ksmd's
  walk (see :data:`AVERAGE_SECONDS`); a window that saturated a core cuts
  at once;
* **the duty cycle just measured** (before 6.7): ksmd's CPU time over
  the last window with the batch size that was set gives the batch that
  meets the target, whatever the rate or the kernel's sleep accuracy.
  Needs a window long enough to hold a few clock ticks when ksmd's CPU
  time comes in ticks.
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
# When ksmd's CPU time comes to the nanosecond (``schedstat``), a window
# needs no clock ticks, only a batch and a sleep or two: a boost's first
# window closes in a tenth of a second, not a quarter (where it ran at
# 10-30% of a core: a wave that merges in a second or two never made up
# that start).
TICK_SECONDS = 0.01
EXACT_WINDOW_CPU = 0.005
EXACT_WINDOW_SECONDS = 0.1
# A boost's batch comes from the last window's cost per page, and ksmd's
# walk moves between pages that cost twenty times more or less (new
# memory, merged pages, pages smart_scan skips): a batch sized in a cheap
# stretch saturates a core in a costly one and the reverse idles it, and
# only the first is capped. Boosts held 43-56% of a core against a 66.5%
# target. So a boost aims, window by window, at its target plus what it
# fell short of (or minus what it went over) in the last CATCH_UP_SECONDS,
# made up within as long, never more than MAX_CATCH_UP of a core over
# the target nor under half of it.
CATCH_UP_SECONDS = 1.0
MAX_CATCH_UP = 0.2
# The same stretches are why a batch is sized on the cost per page over
# the last AVERAGE_SECONDS of windows, not the last window's: with a
# batch of ``p`` pages, ksmd's duty cycle over any stretch of its walk is
# its CPU over that CPU plus one sleep per ``p`` pages, so the batch that
# holds the target is the one sized on the stretch's mean cost per page.
AVERAGE_SECONDS = 1.0
FULL_SCANS_CPU = 0.2  # 20 ticks: a rate from full scans within ~5%


def duty_batch_seconds(percent, sleep_ms):
    """Batch CPU seconds for ``percent`` of a core with ``sleep_ms``."""
    fraction = min(max(percent, 0.01), 99.0) / 100.0
    return fraction * sleep_ms / 1000.0 / (1 - fraction)


def duty_sleep_ms(percent, batch_seconds):
    """Milliseconds of sleep after a batch of ``batch_seconds`` for
    ``percent`` of a core (the inverse of :func:`duty_batch_seconds`)."""
    fraction = min(max(percent, 0.01), 99.0) / 100.0
    return 1000.0 * batch_seconds * (1 - fraction) / fraction


def duty_percent(batch_seconds, sleep_ms):
    """Percent of a core of batches of ``batch_seconds`` between sleeps
    of ``sleep_ms``."""
    return 100.0 * batch_seconds / (batch_seconds + sleep_ms / 1000.0)


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
        self._closes = None  # [(time, ksmd cpu)] at a boost's window ends
        # [(time, elapsed, cpu, pages scanned, batch pages)] of the last
        # windows with one sleep (pages_scanned known: Linux 6.7+)
        self._recent = []
        self.resolution = TICK_SECONDS  # of ksmd's CPU time

    def _limits(self):
        """(wall seconds, ksmd CPU seconds) a window needs, and the CPU
        seconds a rate needs, at the resolution of ksmd's CPU time."""
        if self.resolution < EXACT_WINDOW_CPU / 10:
            return EXACT_WINDOW_SECONDS, EXACT_WINDOW_CPU, EXACT_WINDOW_CPU
        return MIN_WINDOW_SECONDS, MIN_WINDOW_CPU, MIN_RATE_CPU

    def restart(self, sample, pages, sleep_ms):
        """New knobs from ``sample`` on: measure them on their own (the
        last measured duty cycle stands until then)."""
        self._window = (sample.time, sample.ksmd_cpu, sample.pages_scanned,
                        pages, sleep_ms)

    def observe(self, sample):
        """Account a new sample to the current window and the rate."""
        self.resolution = sample.ksmd_cpu_resolution
        self._rate_from_full_scans(sample)
        if self._window is None:
            return
        t0, cpu0, scanned0, pages, sleep_ms = self._window
        used, elapsed = sample.ksmd_cpu - cpu0, sample.time - t0
        min_seconds, min_cpu, rate_cpu = self._limits()
        if elapsed < min_seconds or (used < min_cpu
                                     and elapsed < MAX_WINDOW_SECONDS):
            return
        if used >= rate_cpu and None not in (sample.pages_scanned,
                                             scanned0):
            self._learn(max(1, sample.pages_scanned - scanned0) / used,
                        'pages_scanned')
        if pages:
            self.duty = (pages, used / elapsed, sleep_ms)
            self._remember(sample, elapsed, used, scanned0, pages, sleep_ms)
        if self._closes is not None:
            self._closes.append((sample.time, sample.ksmd_cpu))
            while (len(self._closes) > 2 and self._closes[1][0]
                   <= sample.time - CATCH_UP_SECONDS):
                self._closes.pop(0)
        self._window = (sample.time, sample.ksmd_cpu, sample.pages_scanned,
                        pages, sleep_ms)

    def _remember(self, sample, elapsed, used, scanned0, pages, sleep_ms):
        recent = self._recent
        if None in (sample.pages_scanned, scanned0) or \
                sample.pages_scanned < scanned0:
            recent[:] = []
            return
        if recent and recent[-1][5] != sleep_ms:
            recent[:] = []
        recent.append((sample.time, elapsed, used,
                       sample.pages_scanned - scanned0, pages, sleep_ms))
        while len(recent) > 1 and recent[1][0] <= (sample.time
                                                   - AVERAGE_SECONDS):
            recent.pop(0)

    def _mean_batch(self, percent, sleep_ms):
        """The batch for ``percent`` from the recent windows' mean cost
        per page and their sleeps as ksmd slept them (the kernel sleeps
        in jiffies; never taken as shorter than asked), or None."""
        recent = self._recent
        if not recent or recent[-1][5] != sleep_ms:
            return None
        cpu = sum(r[2] for r in recent)
        scanned = sum(r[3] for r in recent)
        if cpu < self._limits()[1] or scanned <= 0:
            return None
        batches = sum(r[3] / float(r[4]) for r in recent)
        sleep = sleep_ms / 1000.0
        if batches >= 1:
            idle = sum(r[1] for r in recent) - cpu
            sleep = min(3 * sleep, max(sleep, idle / batches))
        return duty_batch_seconds(percent, 1000.0 * sleep) * scanned / cpu

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

    def start_boost(self, sample=None):
        """A boost starts (at ``sample``): assume new memory, the
        costliest to scan."""
        self.rate = min(self.rate, self.merge_rate)
        self._boost_min = None
        self.duty = None  # measured on other memory, at other knobs
        self._recent = []
        self._closes = None if sample is None else [
            (sample.time, sample.ksmd_cpu)]

    def catch_up(self, percent, most):
        """The percent of a core a boost aims at for a ``percent``
        target: plus what the last second (at most) fell short of it, to
        be made up within a second (see :data:`CATCH_UP_SECONDS`), at
        most ``most``."""
        closes = self._closes
        if not closes or len(closes) < 2:
            return percent
        (t0, cpu0), (t1, cpu1) = closes[0], closes[-1]
        if t1 <= t0:
            return percent
        short = (percent / 100.0 * (t1 - t0) - (cpu1 - cpu0)) / max(
            CATCH_UP_SECONDS, t1 - t0)
        short = min(MAX_CATCH_UP, max(-percent / 200.0, short))
        return min(most, percent + 100.0 * short)

    def end_boost(self):
        """Remember the slowest rate of this boost for the next one."""
        if self._boost_min is not None:
            self.merge_rate = 0.5 * self.merge_rate + 0.5 * self._boost_min
        self._boost_min = None
        self._closes = None

    def pages_for(self, percent, sleep_ms, target=None):
        """The batch that holds ``percent`` of a core with ``sleep_ms``
        (no longer than a ``target`` percent's would be, when ksmd is
        starved: a boost catching up aims over its target)."""
        batch = duty_batch_seconds(percent, sleep_ms)
        longest = self.MAX_BATCH_FACTOR * self.fast_rate * (
            batch if target is None else duty_batch_seconds(target,
                                                            sleep_ms))
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
        mean = self._mean_batch(percent, sleep_ms)
        if mean is None:
            return wanted
        # The mean cost, but down at once when the last window saturated
        # a core (a long costly stretch began).
        if fraction >= self.SATURATED:
            return min(mean, wanted)
        return min(mean, pages * self.MAX_STEP)
