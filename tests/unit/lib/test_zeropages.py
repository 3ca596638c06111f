"""Counting guest pages that map the zero page, from pagemap bytes."""

from nova_ksm_inject import procfs
from tests.lib import zeropages

SMALL, HUGE = 0x3b34, 0x34c400
PRESENT, FILE, SOFT_DIRTY = (zeropages.PRESENT, zeropages.FILE,
                             zeropages.SOFT_DIRTY)


def pagemap(*entries):
    return b''.join(e.to_bytes(8, 'little') for e in entries)


def test_small_zero_pages_count_one_each_whatever_their_flags():
    frames = zeropages.ZeroFrames(SMALL, HUGE)
    data = pagemap(PRESENT | SMALL, PRESENT | SOFT_DIRTY | SMALL,
                   PRESENT | 0x1234, 0, SMALL)  # absent: not mapped
    assert frames.count(data) == 2


def test_a_huge_zero_page_counts_512_by_its_first_subpage():
    frames = zeropages.ZeroFrames(SMALL, HUGE)
    huge = [PRESENT | FILE | (HUGE + i) for i in range(512)]
    assert frames.count(pagemap(*huge, PRESENT | 0x99)) == 512


def test_an_entry_that_straddles_two_entries_is_not_counted():
    frames = zeropages.ZeroFrames(SMALL, None)
    zero = (PRESENT | SMALL).to_bytes(8, 'little')
    # The zero page's 8 bytes, 3 bytes into two other entries.
    data = b'\x01\x02\x03' + zero + b'\x04\x05\x06\x07\x08'
    assert len(data) == 16 and zero in data
    assert frames.count(data) == 0
    assert frames.count(data + zero) == 1


def test_no_frames_means_nothing_counted_nor_read(monkeypatch):
    frames = zeropages.ZeroFrames(None, None)
    assert not frames
    assert zeropages.zero_mapped(1, frames) == 0
    # The same frame for both (huge pages off) counts once.
    assert zeropages.ZeroFrames(SMALL, SMALL).huge is None


def test_only_mergeable_mappings_are_read(tmp_path, monkeypatch):
    proc = tmp_path / '42'
    proc.mkdir()
    (proc / 'smaps').write_text(
        '7f0000000000-7f0000004000 rw-p 00000000 00:00 0 \n'
        'Size:                 16 kB\n'
        'VmFlags: rd wr mr mw me ac hg mg \n'
        '7f0000004000-7f0000006000 rw-p 00000000 00:00 0 \n'
        'Size:                  8 kB\n'
        'VmFlags: rd wr mr mw me ac \n')
    page = zeropages.PAGE
    base = 0x7f0000000000 // page
    # The kernel's pagemap, sparse: page index -> entry.
    entries = {base: PRESENT | SMALL, base + 2: PRESENT | SMALL,
               base + 5: PRESENT | SMALL}  # not mergeable: not counted

    def fake_pagemap(path, start, pages):
        assert path == str(proc / 'pagemap')
        return pagemap(*(entries.get(start // page + i, 0)
                         for i in range(pages)))
    monkeypatch.setattr(procfs, 'PROC_ROOT', str(tmp_path))
    monkeypatch.setattr(zeropages, '_pagemap', fake_pagemap)
    assert zeropages.mergeable_ranges(42) == [
        (0x7f0000000000, 0x7f0000004000)]
    assert zeropages.zero_mapped(42, zeropages.ZeroFrames(SMALL)) == 2
    # A guest that is gone: nothing, not an error.
    assert zeropages.zero_mapped(43, zeropages.ZeroFrames(SMALL)) == 0
