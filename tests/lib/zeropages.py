"""How many pages of a guest's mergeable memory map the shared zero page.

KSM is not the only way guest memory stops occupying RAM. Since Linux
6.12, splitting a transparent huge page maps its zero-filled subpages to
the kernel's shared zero page, and ksmd splits huge pages to merge parts
of them. Those subpages leave the guest's resident memory without being
counted as merged (``pages_sharing``): a policy that splits late, when
more of a huge page is still zero, saves memory that the KSM counters do
not show. Reading never-written memory maps the zero page too.

The kernel's page tables say which pages those are: ``/proc/<pid>/pagemap``
gives each page's frame number (to root), and the zero page's frame is the
one a read of fresh anonymous memory maps. The huge zero page (a read
fault in a huge-page region) is 512 frames from its head's. Only the
mergeable mappings (``mg`` in ``/proc/<pid>/smaps``: the guest's RAM) are
read, 8 bytes a page.
"""

import ctypes
import mmap
import os

from nova_ksm_inject import procfs

PAGE = mmap.PAGESIZE
HUGE = 2 * 1024 * 1024
PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1


SOFT_DIRTY = 1 << 55
FILE = 1 << 61  # set for the huge zero page (not an anonymous page)
FLAGS = tuple(PRESENT | f for f in (0, SOFT_DIRTY, FILE, FILE | SOFT_DIRTY))
PAGES_PER_HUGE = HUGE // PAGE


def _proc(pid, name):
    return os.path.join(procfs.PROC_ROOT, str(pid), name)


def _pagemap(path, start, pages):
    """``pages`` raw 8-byte pagemap entries from address ``start``."""
    with open(path, 'rb') as f:
        f.seek(start // PAGE * 8)
        return f.read(pages * 8)


def _frame_after_read(size, hugepage):
    """The frame a read of fresh anonymous memory maps (at a huge page
    boundary with ``hugepage``), or None when frames are hidden."""
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        view = ctypes.c_char.from_buffer(area)
        base = ctypes.addressof(view)
        del view  # it pins the mapping
        address = -(-base // HUGE) * HUGE if hugepage else base
        if hugepage:
            area.madvise(mmap.MADV_HUGEPAGE)
        area[address - base]  # a read fault, nothing written
        entry = int.from_bytes(
            _pagemap('/proc/self/pagemap', address, 1), 'little')
    except OSError:
        return None
    finally:
        area.close()
    return entry & PFN_MASK if entry & PRESENT else None


class ZeroFrames(object):
    """The zero page's frame and the huge zero page's first frame."""

    def __init__(self, small=None, huge=None):
        self.small = small or None
        self.huge = huge if huge and huge != small else None

    @classmethod
    def probe(cls):
        """Find them with two read faults; both None when not root."""
        return cls(_frame_after_read(PAGE, hugepage=False),
                   _frame_after_read(2 * HUGE, hugepage=True))

    def __bool__(self):
        return bool(self.small or self.huge)

    def count(self, data):
        """Pages of raw pagemap ``data`` that map a zero page."""
        total = 0
        for frame, pages in ((self.small, 1), (self.huge, PAGES_PER_HUGE)):
            if not frame:
                continue
            # A huge zero page maps frames head..head+511 in order: its
            # first subpage stands for all of them.
            for flags in FLAGS:
                total += pages * _count_aligned(
                    data, (flags | frame).to_bytes(8, 'little'))
        return total


def _count_aligned(data, entry):
    """Occurrences of the 8-byte ``entry`` at whole entries of ``data``."""
    count, at = 0, data.find(entry)
    while at >= 0:
        if at % 8:
            at = data.find(entry, at + 1)
            continue
        count += 1
        at = data.find(entry, at + 8)
    return count


def mergeable_ranges(pid):
    """[(start, end)] of ``pid``'s mappings marked mergeable (``mg``)."""
    ranges, current = [], None
    with open(_proc(pid, 'smaps')) as f:
        for line in f:
            first = line.split(None, 1)[0]
            if first == 'VmFlags:':
                if current and 'mg' in line.split()[1:]:
                    ranges.append(current)
            elif '-' in first and not first.endswith(':'):
                start, end = first.split('-')
                current = (int(start, 16), int(end, 16))
    return ranges


def zero_mapped(pid, frames):
    """Pages of ``pid``'s mergeable memory that map a zero page; 0 when
    ``pid`` is gone or frames are hidden."""
    if not frames:
        return 0
    try:
        return sum(frames.count(_pagemap(_proc(pid, 'pagemap'), start,
                                         (end - start) // PAGE))
                   for start, end in mergeable_ranges(pid))
    except (OSError, ValueError):
        return 0


if __name__ == '__main__':  # pragma: no cover - a manual probe
    import sys
    found = ZeroFrames.probe()
    print('zero frames: %s, %s' % (found.small, found.huge))
    for pid in sys.argv[1:]:
        print(pid, zero_mapped(pid, found), os.path.basename(
            os.readlink('/proc/%s/exe' % pid)))
