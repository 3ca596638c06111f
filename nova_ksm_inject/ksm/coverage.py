"""When a start's boost has merged all it will: every page visited twice.

ksmd merges a page in the pass that visits it with the checksum it had
at its previous visit; two identical new pages merge in the first pass
in which both are visited a second time (the unstable tree is rebuilt
every pass). So once every guest page has been visited once (each
process holds a ``ksm_rmap_items`` for all of its mergeable resident
pages, Linux 6.1+) during pass *k*, pass *k + 1* visits each a second
time and merges what will merge: the boost can end at its end, with no
quiet pass after it (a quarter to a third of a start's boost).

Pages that ``smart_scan`` skips do not change this, with one exception:
it skips only pages visited at least three times without merging (older
guests' unmerged pages), never a new guest's, so a new page whose twin
is merged already merges at its second visit. The exception is a twin
that never merged: the pages of the first guest of an image, when the
second starts. They are skipped for up to 8 full scans, and the new
pages merge with them only in the scan that visits them (static-max,
scanning without pause, gets there in a few seconds; the tuner's full
scans take longer). So a start's boost that merged nothing while pages
were skipped holds any end (and any verdict that merging does not pay)
and turns ``smart_scan`` off for one full scan, which visits every page:
the twins merge in it, or there are none (a loss, then, for guests that
share nothing). One full scan of the older guests' unmerged pages costs
what two or three of the scans that skip them do; waiting for them to
come due cost up to nine.

A boost that merged *some* of those twins is no better: the first
guest's pages came in over more than one full scan, so they are skipped
in cohorts, and the new pages merge with the cohort that came due (a
second guest of 880 MiB merged 41% of its twins, static-max all of
them). An older guest's ``ksm_merging_pages`` growing during the boost
says so: twins that are merged already never change it, only unmerged
ones that found a new twin do. So, while pages are skipped, the first
such growth turns ``smart_scan`` off until a whole full scan has
visited every page (:meth:`Coverage.note_older_twins`): every pair
meets in it, and the boost may end after it. An *older* guest is one
ksmd has been through :data:`OLD_SCANS` full scans at least since it
was first seen, at the boost's start or since (:meth:`Coverage.older`):
younger pages are never skipped.

A boost with no older guest waits for no skipped page: what
``smart_scan`` skips then are the new guests' own pages, from their
fifth visit on, and those have met every other page in the full scans
before. A first guest of an image running alone, whose boost lasted
until its own pages were skipped, had waited two full scans more with
``smart_scan`` off before it could call the loss (4.0 ksmd CPU seconds
for a guest of 1520 MiB, in one run of seven such first waves).

Memory that arrives after the first visits starts the count again.

The tuner counts a process's mergeable resident pages as its resident
pages less its own memory (QEMU's or the interpreter's: the mappings
without ``mg`` in ``/proc/<pid>/smaps``, measured when the process is
first seen and every :data:`OWN_MEMORY_REFRESH` seconds while boosting),
so that small guests, where that memory is a tenth of the total, are
counted right.
"""

from nova_ksm_inject.ksm import signals

OWN_MEMORY_REFRESH = 10.0
# A boost that merged fewer pages than this merged nothing...
MERGED_NOTHING = 64
# ... nor one that merged less than this share of the memory that came
# with its guests (a few hundred pages the interpreters or firmware of
# two guests share are not the twins of a whole guest).
MERGED_NOTHING_FRACTION = 0.01
# smart_scan skips no page before its fifth visit without merging (its
# age must reach 3, and that visit only sets the count of skips):
# after three full scans a process's pages may be skipped in the next
# ones (one full scan of margin).
OLD_SCANS = 3


class Coverage(object):
    """Tracks one boost's passes from the first visit of every page."""

    # All but this share of the guests' mergeable pages have an rmap item:
    # visited once (what is left are pages ksmd cannot merge).
    UNVISITED_FRACTION = 0.05
    # Memory grown since then by more than this (and 16 MiB) arrived
    # after the first visits: they start over.
    ARRIVED_FRACTION = 0.01

    def __init__(self):
        self._pages = 0  # guest pages when every page was visited
        self.reset()

    def reset(self, sample=None, before=None):
        """A boost starts (at ``sample``; None: not a guest's start);
        ``before``: {pid: full scans when the tuner first saw it} of the
        guests that ran before it."""
        self.visited_at = None  # full scans when every page was visited
        # (merged, pages_skipped, guest pages) at the start
        self._start = None if sample is None else (
            sample.merged, sample.pages_skipped, sample.guest_pages)
        self._unskip_at = None  # full scans when smart_scan went off
        # The earlier guests' first sighting and ksm_merging_pages at the
        # start, the full scans when their twins turned smart_scan off,
        # and whether a whole full scan has visited every page since.
        merging = (sample.process_merging or {}) if sample else {}
        self._before = dict(before or {})
        self._start_scans = sample.full_scans if sample else 0
        self._merging = {pid: merging[pid] for pid in self._before
                         if merging.get(pid) is not None}
        # Skipped pages may be twins only when the kernel does not say
        # whose pages are whose, or once an earlier guest is older (see
        # :meth:`older`): otherwise they are the new guests' own, skipped
        # from their fifth visit.
        self._unknown = sample is not None and sample.process_merging is None
        self._twins_at = None
        self._twins_done = False

    def older(self, sample):
        """The earlier guests whose pages smart_scan may skip by now:
        those ksmd had been through :data:`OLD_SCANS` full scans at the
        boost's start (their fifth visit may come in its first full
        scans), and those that got there since: a guest's pages are
        visited from the full scan in which the tuner saw it at the
        earliest, so their fifth visit is in the fifth full scan at the
        earliest. A second guest of an image that started two full scans
        after the first met the first's twins in the full scan in which
        they were skipped, merged nothing, and the boost called a loss
        (measured: 81,922 pages of a 480 MiB guest, all of its wave's
        saving, left unmerged until the next guest started)."""
        return [pid for pid, seen in self._before.items()
                if self._start_scans - seen >= OLD_SCANS
                or sample.full_scans - seen >= OLD_SCANS + 1]

    def _skips_count(self, sample):
        return self._unknown or bool(self.older(sample))

    def note(self, sample):
        """Remember the pass in which every guest page had been visited
        once (the pass under way, or the one that just ended). Memory
        that arrived since counts from the pass in which it, too, was
        visited: the look that sees it visited, not the next full scan's
        end (a guest filling 3.6 GiB over two passes had taken one more,
        3 ksmd CPU seconds)."""
        if sample.unvisited is None or not sample.guest_pages:
            return
        if self.visited_at is not None and not signals.Growth.significant(
                sample.guest_pages, self._pages, self.ARRIVED_FRACTION):
            return
        if sample.unvisited <= self.UNVISITED_FRACTION * sample.guest_pages:
            self.visited_at = sample.full_scans
            self._pages = sample.guest_pages
        else:
            self.visited_at = None  # new memory: its first visits first

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

    @property
    def unskipping(self):
        """Whether the boost should scan with ``smart_scan`` off: it is
        visiting the skipped pages (see :meth:`waiting_for_skipped`)."""
        return self._unskip_at is not None or self._twins_pending

    @property
    def unskip_reason(self):
        """Why the boost scans with ``smart_scan`` off (for the log)."""
        if self._twins_pending:
            return ('an older guest\'s unmerged pages merged with the new '
                    'ones while smart_scan skipped pages: smart_scan off '
                    'for a full scan')
        return ('nothing merged while smart_scan skipped pages: smart_scan '
                'off for a full scan')

    @property
    def _twins_pending(self):
        return self._twins_at is not None and not self._twins_done

    def note_older_twins(self, sample):
        """Turn ``smart_scan`` off for a whole full scan once an older
        guest's unmerged pages merge with the new ones while pages are
        skipped: the skipped ones may hold more of their twins (call at
        every look of a start's boost). Not while a boost that merged
        nothing visits the skipped pages already: its full scan with
        ``smart_scan`` off is the one, and it holds the end until a full
        scan merges no more (:meth:`waiting_for_skipped`)."""
        if self._twins_at is not None or self._unskip_at is not None or \
                self._start is None or \
                None in (sample.pages_skipped, self._start[1]) or \
                sample.pages_skipped == self._start[1]:
            return
        merging = sample.process_merging or {}
        older = self.older(sample)
        grown = sum(max(0, merging[pid] - then)
                    for pid, then in self._merging.items()
                    if pid in older and merging.get(pid) is not None)
        if grown >= self._nothing(sample):
            self._twins_at = sample.full_scans

    def _nothing(self, sample):
        """Fewer pages merged than this is nothing (see
        :data:`MERGED_NOTHING_FRACTION`)."""
        return max(MERGED_NOTHING, MERGED_NOTHING_FRACTION
                   * (sample.guest_pages - self._start[2]))

    def waiting_for_skipped(self, sample, grown):
        """Why an end must wait for the pages smart_scan skipped, or ''
        (call at the end of a full scan in which sharing grew by
        ``grown``). A start's boost that merged nothing while pages were
        skipped visits them: ``smart_scan`` off (:attr:`unskipping`) for
        a whole full scan, which compares every page with the new ones;
        if their twins merge, until a full scan merges no more; if nothing
        merged, there was nothing to merge."""
        if self._twins_pending:
            # The full scan under way began with smart_scan on: the next.
            if sample.full_scans < self._twins_at + 2:
                return ('older guests\' pages merging with the new ones '
                        'while %d pages were skipped: visiting them, '
                        'smart_scan off, for a full scan'
                        % (sample.pages_skipped - self._start[1]))
            self._twins_done = True  # every pair met in that full scan
        if self._start is None or None in (sample.pages_skipped,
                                           self._start[1]) or \
                not self._skips_count(sample):
            return ''
        merged0, skipped0, _ = self._start
        nothing = self._nothing(sample)
        if self._unskip_at is None and sample.pages_skipped == skipped0:
            return ''
        if sample.merged - merged0 < nothing:
            if self._unskip_at is None:
                self._unskip_at = sample.full_scans
            # The full scan under way began with smart_scan on: the next.
            if sample.full_scans < self._unskip_at + 2:
                return ('nothing merged yet and %d pages skipped: visiting '
                        'them, smart_scan off, for a full scan'
                        % (sample.pages_skipped - skipped0))
            self._unskip_at = None  # all compared: nothing to merge
            return ''
        if self._unskip_at is not None:
            if grown >= MERGED_NOTHING:
                return 'skipped pages merging: %d more' % grown
            self._unskip_at = None  # smart_scan back on
        return ''
