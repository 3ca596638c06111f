"""What the real-guest benchmark's saving rests on: when ksmd splits a
transparent huge page to merge part of it, Linux 6.12+ maps the page's
zero-filled subpages to the shared zero page. Resident memory drops by
all of them, yet none counts as merged (``ksm_merging_pages``,
``ksm_zero_pages``). QEMU backs guest RAM with huge pages, so merged
pages alone undercount what KSM saves a guest (bench/ksm_targets.py).

The kernel's own counters are the readers: ``smaps_rollup`` and
``ksm_stat`` of this process. The benchmark's reader of those zero-page
mappings (``bench/zeropages.py``, from ``/proc/<pid>/pagemap``) must find
exactly the pages the resident memory lost."""

import ctypes
import mmap
import os
import platform
import time

import pytest

from tests.functional.ksm import conftest
from tests.lib import zeropages

MADV_MERGEABLE, MADV_HUGEPAGE = 12, 14
HUGE = 2 << 20
PAGE = mmap.PAGESIZE
HUGE_PAGES = 16
SAME = 9  # subpages with the same bytes in every huge page


def kernel_at_least(major, minor):
    numbers = platform.release().split('-')[0].split('.')
    return (int(numbers[0]), int(numbers[1])) >= (major, minor)


def thp_madvise():
    try:
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            return '[never]' not in f.read()
    except OSError:
        return False


def rollup():
    values = {}
    with open('/proc/self/smaps_rollup') as f:
        for line in f:
            name, _, rest = line.partition(':')
            if rest.strip().endswith('kB'):
                values[name] = int(rest.split()[0])
    return values


def ksm_stat():
    with open('/proc/self/ksm_stat') as f:
        return {k: int(v) for k, v in (line.split() for line in f)
                if v.lstrip('-').isdigit()}


def madvise(libc, address, length, advice):
    if libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length),
                    advice):
        raise OSError(ctypes.get_errno(), 'madvise(%d)' % advice)


@pytest.mark.skipif(not kernel_at_least(6, 12),
                    reason='zero subpages go to the zero page from 6.12')
@pytest.mark.skipif(not thp_madvise(), reason='transparent huge pages off')
def test_a_split_huge_page_gives_its_zero_subpages_back_unmerged(
        ksm_saved):
    libc = ctypes.CDLL(None, use_errno=True)
    size = HUGE_PAGES * HUGE
    buf = mmap.mmap(-1, size + HUGE,
                    flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        offset = (-base) % HUGE  # huge pages need 2 MiB alignment
        madvise(libc, base + offset, size, MADV_HUGEPAGE)
        same = os.urandom(PAGE)
        for i in range(HUGE_PAGES):
            start = offset + i * HUGE
            buf[start:start + PAGE] = os.urandom(PAGE)
            for j in range(1, SAME + 1):
                buf[start + j * PAGE:start + (j + 1) * PAGE] = same
        before = rollup()
        frames = zeropages.ZeroFrames.probe()
        zero_before = zeropages.zero_mapped(os.getpid(), frames)
        if before['AnonHugePages'] < size // 1024:
            pytest.skip('the kernel gave no huge pages (%d kB)'
                        % before['AnonHugePages'])
        madvise(libc, base + offset, size, MADV_MERGEABLE)
        conftest.write_ksm('pages_to_scan', 5000)
        conftest.write_ksm('sleep_millisecs', 10)
        conftest.write_ksm('run', 1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stat = ksm_stat()
            if stat.get('ksm_merging_pages', 0) >= HUGE_PAGES * SAME \
                    and rollup()['AnonHugePages'] == 0:
                break
            time.sleep(0.2)
        after, stat = rollup(), ksm_stat()
        zero_after = zeropages.zero_mapped(os.getpid(), frames)
        # Every huge page was split to merge its 9 common subpages ...
        assert after['AnonHugePages'] == 0
        assert stat['ksm_merging_pages'] == HUGE_PAGES * SAME
        assert stat.get('ksm_zero_pages', 0) == 0
        # ... and its 502 zero subpages left the resident memory too.
        zero_kib = HUGE_PAGES * (HUGE - (SAME + 1) * PAGE) // 1024
        assert before['Rss'] - after['Rss'] >= 0.95 * zero_kib
        # The benchmark's page-table reader finds each of them on the
        # zero page (and none before the split).
        assert zero_before == 0
        assert zero_after == zero_kib * 1024 // PAGE
    finally:
        buf.close()
