"""Whether merging pays, and whether the host is short of memory.

**Profit.** KSM saves a page per ``pages_sharing`` (and per KSM zero page)
but keeps a ``struct ksm_rmap_item`` (64 bytes on 64-bit kernels) for
every page it tracks. Linux 6.4 reports the difference as
``general_profit``; on older kernels the tuner computes the same from the
per-process ``ksm_rmap_items`` (``/proc/<pid>/ksm_stat``, 6.1+) or, before
6.1, from the pages KSM tracks (each has one rmap item). Guests with
nothing in common make it negative: ksmd then costs memory and CPU and
saves nothing.

**Pressure.** ``MemAvailable`` under ``pressure_memavailable_percent`` of
RAM, or processes stalling on memory (PSI ``some avg10`` of
``/proc/pressure/memory``, Linux 4.20+, at least
:attr:`Pressure.PSI_SOME_PERCENT`). Leaving pressure needs a little more
than entering it (hysteresis), so the state does not flap.
"""

import mmap

PAGE_SIZE = mmap.PAGESIZE
MIB = 1024 * 1024
RMAP_ITEM_BYTES = 64  # sizeof(struct ksm_rmap_item), 64-bit kernels


def profit(values, process_stats, page_size=PAGE_SIZE):
    """(bytes, source): KSM's net saving, from sysfs ``values`` and the
    ``ksm_stat`` of the mergeable processes."""
    if isinstance(values.get('general_profit'), int):
        return values['general_profit'], 'general_profit'
    merged = values.get('pages_sharing', 0) + values.get('ksm_zero_pages',
                                                         0)
    stats = [s for s in process_stats if 'ksm_rmap_items' in s]
    if stats:
        items, source = sum(s['ksm_rmap_items'] for s in stats), \
            'estimated from ksm_rmap_items'
    else:
        items = sum(values.get(k, 0) for k in (
            'pages_shared', 'pages_sharing', 'pages_unshared',
            'pages_volatile'))
        source = 'estimated from tracked pages'
    return merged * page_size - items * RMAP_ITEM_BYTES, source


class Pressure(object):
    """Memory pressure, with hysteresis."""

    PSI_SOME_PERCENT = 10.0
    EXIT_FACTOR = 1.25  # leave at 25% more available memory than entered

    def __init__(self, settings):
        self.settings = settings
        self.active = False
        self.reason = ''

    def check(self, sample):
        """Whether the host is short of memory now."""
        limit = self.settings.pressure_memavailable_percent
        available = None
        if sample.mem_available is not None and sample.mem_total:
            available = 100.0 * sample.mem_available / sample.mem_total
        psi = sample.psi_some
        exit_factor = self.EXIT_FACTOR if self.active else 1.0
        psi_limit = self.PSI_SOME_PERCENT / (2 if self.active else 1)
        low = available is not None and available < limit * exit_factor
        stalled = psi is not None and psi >= psi_limit
        self.active = low or stalled
        self.reason = ('memory pressure: MemAvailable %s of RAM (limit %g%%),'
                       ' PSI memory some avg10 %s' % (
                           'n/a' if available is None
                           else '%.1f%%' % available, limit,
                           'n/a' if psi is None else '%.1f%%' % psi))
        return self.active


class Profit(object):
    """Counts full scans that ended with a negative profit."""

    LOSS_SCANS = 2

    def __init__(self, settings):
        self.settings = settings
        self.negative = 0
        self.verdict = ''

    def reset(self):
        self.negative = 0

    def full_scan(self, sample):
        """A full scan ended at ``sample``."""
        if sample.profit is None:
            return
        self.negative = self.negative + 1 if sample.profit < 0 else 0

    def losing(self, sample):
        """Whether the profit stayed negative over the last full scans."""
        if self.negative < self.LOSS_SCANS:
            return False
        self.verdict = (
            'merging does not pay: KSM profit %.1f MiB (%s) over the last '
            '%d full scans, %d pages merged of %d tracked' % (
                sample.profit / MIB, sample.profit_source, self.negative,
                sample.merged, sample.tracked))
        return True

    def stop_run(self, sample):
        """(run, why): stop ksmd, and unmerge when asked and memory
        leaves room for every page that would be unshared."""
        if not self.settings.unmerge_on_loss:
            return 0, ('ksmd stopped, merged pages left merged '
                       '(unmerge_on_loss = false)')
        need_kib = sample.merged * PAGE_SIZE // 1024
        floor_kib = (sample.mem_total or 0) * (
            self.settings.pressure_memavailable_percent / 100.0)
        if sample.mem_available is not None and \
                sample.mem_available - need_kib >= floor_kib:
            return 2, ('ksmd stopped and %d merged pages unmerged '
                       '(unmerge_on_loss)' % sample.merged)
        return 0, ('ksmd stopped; not unmerging: %d merged pages need %.0f '
                   'MiB and MemAvailable is %s' % (
                       sample.merged, need_kib / 1024.0,
                       'unknown' if sample.mem_available is None
                       else '%.0f MiB' % (sample.mem_available / 1024.0)))


class Growth(object):
    """New memory in guests that already run, and the scan rate that
    covers it.

    A guest's memory grows as it boots and works. A boost scans all
    mergeable memory three times at the full budget; for growth the tuner
    instead *follows*: it scans :attr:`FOLLOW_SCANS` times the new pages
    within :attr:`FOLLOW_SECONDS` (``smart_scan`` skips the old pages
    that never merged), which costs in proportion to the growth.
    """

    FRACTION = 0.05  # growth that counts: over 5% ...
    PAGES = 4096  # ... and over 16 MiB
    FOLLOW_SCANS = 3
    FOLLOW_SECONDS = 15.0

    def __init__(self):
        self.baseline = (0, 0)  # (guest_pages, tracked)
        self.follows = []  # [(until, pages per second)]

    def reset(self, sample):
        self.baseline = (sample.guest_pages, sample.tracked)

    def shrink_with(self, sample):
        """Follow shrinking memory down, so that it growing back counts."""
        self.baseline = (min(self.baseline[0], sample.guest_pages),
                         min(self.baseline[1], sample.tracked))

    @classmethod
    def significant(cls, now, then, fraction=FRACTION):
        """Whether ``then`` -> ``now`` pages is growth that counts."""
        return now - then > max(cls.PAGES, fraction * then)

    def grown(self, sample, fraction=FRACTION):
        """Why there is new memory to cover, or ''; counted once."""
        pages, tracked = self.baseline
        for name, now, then in (('guest memory', sample.guest_pages, pages),
                                ('KSM tracked pages', sample.tracked,
                                 tracked)):
            if self.significant(now, then, fraction):
                self.follows.append((
                    sample.time + self.FOLLOW_SECONDS,
                    self.FOLLOW_SCANS * (now - then) / self.FOLLOW_SECONDS))
                self.reset(sample)
                return '%s grew from %d to %d pages' % (name, then, now)
        return ''

    def rate(self, now):
        """Pages per second to scan for the growth still being followed."""
        self.follows = [f for f in self.follows if f[0] > now]
        return sum(rate for _, rate in self.follows)
