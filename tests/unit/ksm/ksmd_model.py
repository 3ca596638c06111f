"""A ksmd that follows the duty-cycle arithmetic of the real one, for
driving the policy through whole scenarios in unit tests.

Per batch it scans ``pages_to_scan`` pages at ``cost`` CPU seconds each
and then sleeps ``sleep_millisecs`` times ``slack`` (the kernel sleeps in
jiffies). New memory costs ``new_cost`` per page until it has been
through two full scans (the checksum, then the merge), after which a page
costs ``merged_cost`` (figures of the order measured on Linux 6.18:
~4 us and ~0.3 us). CPU time is reported in 10 ms ticks, as
``/proc/<pid>/stat`` does, or to the nanosecond (``schedstat``).
"""

import dataclasses

from nova_ksm_inject.ksm import policy

TICK = 0.01


@dataclasses.dataclass
class Ksmd(object):
    pages: int  # mergeable pages
    new_cost: float = 4e-6
    merged_cost: float = 3e-7
    slack: float = 1.1
    identical: float = 0.85
    guests: int = 4
    has_pages_scanned: bool = True
    exact_cpu: bool = False  # CPU time to the ns (schedstat), not ticks
    cpu: float = 0.0
    scanned: float = 0.0
    new_pages: float = 0.0  # pages not yet through two full scans
    now: float = 0.0

    def __post_init__(self):
        self.new_pages = 2.0 * self.pages

    def add_memory(self, pages):
        """A guest arrives with ``pages`` of new memory."""
        self.pages += pages
        self.new_pages += 2.0 * pages

    def run(self, knobs, seconds):
        """Advance ``seconds`` under ``knobs``; CPU, scans, merging."""
        self.now += seconds
        if knobs.get('run') != 1:
            return
        pages = knobs['pages_to_scan']
        sleep = knobs['sleep_millisecs'] / 1000.0 * self.slack
        new_share = min(1.0, self.new_pages / max(1, 2 * self.pages))
        cost = new_share * self.new_cost + (1 - new_share) * self.merged_cost
        batch = pages * cost
        cpu = seconds * batch / (batch + sleep)
        scanned = cpu / cost
        self.cpu += cpu
        self.scanned += scanned
        self.new_pages = max(0.0, self.new_pages - scanned)

    @property
    def full_scans(self):
        return int(self.scanned / max(1, self.pages))

    @property
    def merged(self):
        done = 1 - min(1.0, self.new_pages / max(1, 2 * self.pages))
        return int(done * self.pages * self.identical
                   * (self.guests - 1) / self.guests)

    def sample(self, **extra):
        tracked = self.pages if self.scanned else 0
        return policy.Sample(
            time=self.now, full_scans=self.full_scans, merged=self.merged,
            tracked=tracked,
            pages_scanned=int(self.scanned) if self.has_pages_scanned
            else None,
            ksmd_cpu=self.cpu if self.exact_cpu else int(
                self.cpu / TICK) * TICK,
            ksmd_cpu_resolution=1e-9 if self.exact_cpu else TICK,
            guests=self.guests, guest_pages=self.pages, **extra)


def drive(tuner, ksmd, seconds, poll=None, on_poll=None, **extra):
    """Let ``tuner`` run ``ksmd`` for ``seconds``; [(time, cpu, decision)]
    at every poll."""
    decision = tuner.decide(ksmd.sample(**extra))
    trace = [(ksmd.now, ksmd.cpu, decision)]
    end = ksmd.now + seconds
    while ksmd.now < end - 1e-9:
        step = decision.poll_seconds or poll or 1.0
        ksmd.run(decision.knobs(), step)
        if on_poll:
            on_poll(ksmd)
        decision = tuner.decide(ksmd.sample(**extra))
        trace.append((ksmd.now, ksmd.cpu, decision))
    return trace


def worst_window(trace, start, window=2.0):
    """The highest ksmd CPU percent over any ``window`` after ``start``."""
    points = [(t, c) for t, c, _ in trace if t >= start - 1e-9]
    worst = 0.0
    for i, (t0, c0) in enumerate(points):
        for t1, c1 in points[i + 1:]:
            if t1 - t0 >= window - 1e-9:
                worst = max(worst, 100.0 * (c1 - c0) / (t1 - t0))
                break
    return worst


@dataclasses.dataclass
class WalkKsmd(object):
    """ksmd walking stretches of pages that cost ``cheap`` and ``costly``
    CPU seconds each, in turn (merged or skipped pages, then new memory),
    batch by batch: the cost of the next batch is not the last one's.
    Sharing keeps growing (a boost that does not end)."""

    cheap_pages: int = 300000
    costly_pages: int = 40000
    cheap: float = 2.5e-7
    costly: float = 5e-6
    slack: float = 1.1
    cpu: float = 0.0
    scanned: int = 0
    now: float = 0.0
    longest_batch: float = 0.0  # CPU seconds of the longest batch begun

    @property
    def pages(self):
        return self.cheap_pages + self.costly_pages

    def _batch_cost(self, pages):
        cost, pos = 0.0, self.scanned % self.pages
        while pages > 0:
            if pos < self.cheap_pages:
                take, each = min(pages, self.cheap_pages - pos), self.cheap
            else:
                take, each = min(pages, self.pages - pos), self.costly
            cost += take * each
            pages -= take
            pos = (pos + take) % self.pages
        return cost

    def run(self, knobs, seconds):
        end = self.now + seconds
        while self.now < end - 1e-12:
            pages = knobs['pages_to_scan']
            batch = self._batch_cost(pages)
            self.longest_batch = max(self.longest_batch, batch)
            if self.now + batch > end:  # the rest of a batch, next look
                done = (end - self.now) / batch
                self.cpu += end - self.now
                self.scanned += int(pages * done)
                self.now = end
                return
            self.cpu += batch
            self.scanned += pages
            self.now = min(end, self.now + batch
                           + knobs['sleep_millisecs'] / 1000.0 * self.slack)

    def sample(self, **extra):
        return policy.Sample(
            time=self.now, full_scans=self.scanned // self.pages,
            merged=self.scanned // 10, tracked=self.pages,
            pages_scanned=self.scanned, ksmd_cpu=int(self.cpu / TICK) * TICK,
            guests=1, guest_pages=self.pages, **extra)
