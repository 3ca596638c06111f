"""The synthetic mergeable guests (no KSM needed to check their pages)."""

import mmap

from nova_ksm_inject.ksm import procfs
from nova_ksm_inject.ksm import workload


def test_fill_makes_identical_and_unique_pages():
    size = workload.PAGE_SIZE
    a = mmap.mmap(-1, 4 * size)
    b = mmap.mmap(-1, 4 * size)
    workload.fill(a, 4, 2, tag=1)
    workload.fill(b, 4, 2, tag=2)
    pages = [(a[i * size:(i + 1) * size], b[i * size:(i + 1) * size])
             for i in range(4)]
    assert pages[0][0] == pages[0][1] and pages[1][0] == pages[1][1]
    assert pages[2][0] != pages[2][1] and pages[3][0] != pages[3][1]
    assert len({p for pair in pages for p in pair}) == 6


def test_workload_processes_are_mergeable():
    with workload.Workload(count=2, mib=1, identical=0.5) as load:
        assert load.identical_pages == 128
        assert load.expected_sharing == 128
        for pid in load.pids:
            assert procfs.ksm_stat(pid)['ksm_mergeable'] == 'yes'
    assert load.procs == []
