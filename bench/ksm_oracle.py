"""A policy no tuner can be: it knows when each wave has merged.

The grid (``--grid-oracle``) runs it after static-max and the tuner on
the same case, to tell the kernel's limits from the tuner's. It is
given, from static-max's run of the case, each wave's *mark*: the saving
at which that wave's t95 is counted (the level before the wave plus 95%
of what static-max's run added in the wave's phase). From a wave's
first guest it runs ksmd flat out until the saving reaches the mark and
the full scan in progress then ends, and it stops ksmd (``run`` 0) until
the next wave's first guest. A wave whose mark is reached when it
arrives (a lone first guest, with nothing to merge) is never scanned.

The end of that full scan is the kernel's: a page is matched only at
its second visit, and the mark is reached during the new guests' second
visits, so the scan's end is the earliest moment every page of theirs,
the unique ones too, was visited twice; no policy can know a wave has
merged all it will before then. Beyond it the oracle spends nothing on
knowing: it never waits for a full scan that merges nothing, never
scans a first guest alone, never waits for a budget. What it cannot
choose is the kernel's too: where ksmd's cursor is when a guest joins,
and how old, and so how often skipped by ``smart_scan``, the older
guests' pages are. Its pages age only while it merges, as every
policy's do that stops scanning between waves.

* A wave whose t95 target the oracle misses too is missed by every
  policy that stops scanning between waves: no knowledge of when to
  stop and no speed helps. Only scanning between waves (ageing the
  older pages, as static-max does) would, and that costs what
  static-max pays for it (performance.rst, the pages' age).
* A CPU target it misses too is missed by every policy that stops
  scanning once a wave's pages were visited twice, at full speed; a
  policy that scans more slowly while guests fill their memory may
  visit fewer pages twice, so this is measured, not proven.

ksmd runs in batches of :data:`BATCH_PAGES` with no sleep between them
(flat out, as static-max, whose batch is a whole full scan): ``run`` is
read between batches, so a stop takes effect within one batch (about
10 ms of unique pages) rather than at the end of a full scan.
"""

import threading

from bench import ksm_metrics
from bench import ksm_policies

NAME = 'oracle'
BATCH_PAGES = 2000
POLL_SECONDS = 0.02
MARK_FRACTION = 0.95


def marks(phases, levels):
    """Each wave's mark (pages saved): the level before it plus
    :data:`MARK_FRACTION` of what it adds, the saving its t95 counts to
    (:func:`ksm_metrics.threshold`)."""
    found, previous = [], 0
    for _phase, level in zip(phases, levels, strict=False):
        found.append(int(ksm_metrics.threshold(previous, level,
                                               MARK_FRACTION)))
        previous = level
    return found


def marks_from_static(scenario, static):
    """The marks of static-max's raw run of ``scenario``."""
    phases = ksm_metrics.phases_from_log(static['events'], scenario.duration)
    samples = static['samples']
    levels = ksm_metrics.achievable_levels(phases, samples['t'],
                                           samples[ksm_metrics.SAVED])
    return marks(phases, levels)


class Oracle(ksm_policies.Policy):
    """ksmd flat out from a wave's first guest to the end of the full
    scan in which the saving reached the wave's mark."""

    name = NAME
    knobs = {'pages_to_scan': BATCH_PAGES, 'sleep_millisecs': 0, 'run': 0}

    def __init__(self, host, workdir, settings=None, marks=(), **kwargs):
        super().__init__(host, workdir, settings, **kwargs)
        self.marks = list(marks)
        self.wave = 0
        self.mark = None
        self.scans_at_mark = None  # full_scans when the mark was reached
        self.running = False
        # (seconds since start, 'run'|'mark'|'stop', wave, pages saved)
        self.switches = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.watcher = None
        self.t0 = None

    def start(self):
        super().start()
        self.t0 = self.clock()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def guest_starting(self, guest):
        with self.lock:
            if guest.wave <= self.wave:
                return
            self.wave = guest.wave
            self.mark = (self.marks[guest.wave - 1]
                         if guest.wave <= len(self.marks) else None)
            self.scans_at_mark = None
            self._switch(not self._reached())

    def _reached(self):
        return self.mark is not None and self.saved() >= self.mark

    def _done(self):
        """The mark was reached and the full scan in progress then has
        ended."""
        if self.scans_at_mark is None:
            if not self._reached():
                return False
            self.scans_at_mark = self.full_scans()
            self._log('mark')
        return self.full_scans() > self.scans_at_mark

    def full_scans(self):
        return self.host.sysfs.read_int('full_scans')

    def saved(self):
        """Pages saved now (only the guests merge while the bench runs:
        its sampler reports any other mergeable process as noise)."""
        return self.host.sysfs.read_int('pages_sharing')

    def _watch(self):
        while not self.halt.wait(POLL_SECONDS):
            with self.lock:
                if self.running and self._done():
                    self._switch(False)

    def _switch(self, run):
        if run == self.running:
            return
        self.host.sysfs.write('run', 1 if run else 0)
        self.running = run
        self._log('run' if run else 'stop')

    def _log(self, what):
        self.switches.append((round(self.clock() - self.t0, 3), what,
                              self.wave, self.saved()))

    def stop(self):
        self.halt.set()
        if self.watcher is not None:
            self.watcher.join(timeout=5)

    def state(self):
        return 'running' if self.running else 'stopped'

    def report(self):
        return dict(super().report(), marks=self.marks,
                    switches=self.switches)
