"""When a start's boost has merged all it will: every page visited twice.

ksmd merges a page in the pass that visits it with the checksum it had
at its previous visit; two identical new pages merge in the first pass
in which both are visited a second time (the unstable tree is rebuilt
every pass). So once every guest page has been visited once (each
process holds a ``ksm_rmap_items`` for all of its mergeable resident
pages, Linux 6.1+) during pass *k*, pass *k + 1* visits each a second
time and merges what will merge: the boost can end at its end, with no
quiet pass after it (a quarter to a third of a start's boost).

Pages that ``smart_scan`` skips do not change this: it skips only pages
visited at least three times without merging (older guests' unique
pages), never a new guest's. Memory that arrives after the first visits
does: it is visited later, so the count starts again.

The tuner counts a process's mergeable resident pages as its resident
pages less its own memory (QEMU's or the interpreter's: the mappings
without ``mg`` in ``/proc/<pid>/smaps``, measured when the process is
first seen and every :data:`OWN_MEMORY_REFRESH` seconds while boosting),
so that small guests, where that memory is a tenth of the total, are
counted right.
"""

from nova_ksm_inject.ksm import signals

OWN_MEMORY_REFRESH = 10.0


class Coverage(object):
    """Tracks one boost's passes from the first visit of every page."""

    # All but this share of the guests' mergeable pages have an rmap item:
    # visited once (what is left are pages ksmd cannot merge).
    UNVISITED_FRACTION = 0.05
    # Memory grown since then by more than this (and 16 MiB) arrived
    # after the first visits: they start over.
    ARRIVED_FRACTION = 0.01

    def __init__(self):
        self.visited_at = None  # full scans when every page was visited
        self._pages = 0  # guest pages then

    def reset(self):
        self.visited_at = None

    def note(self, sample):
        """Remember the pass in which every guest page had been visited
        once (the pass under way, or the one that just ended)."""
        if (self.visited_at is not None or sample.unvisited is None
                or not sample.guest_pages):
            return
        if sample.unvisited <= self.UNVISITED_FRACTION * sample.guest_pages:
            self.visited_at = sample.full_scans
            self._pages = sample.guest_pages

    def visited_twice(self, sample):
        """Whether the pass that just ended visited every guest page a
        second time (call at the end of a full scan). Only memory that
        arrived since every page was visited counts: the pass may have
        begun while the guests still filled theirs."""
        if self.visited_at is None:
            return False
        if signals.Growth.significant(sample.guest_pages, self._pages,
                                      self.ARRIVED_FRACTION):
            self.visited_at = None  # new memory: its first visits first
            return False
        return sample.full_scans >= self.visited_at + 2
