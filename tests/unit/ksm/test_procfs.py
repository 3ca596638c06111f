"""procfs readers against a fake /proc."""

import pytest

from nova_ksm_inject.ksm import procfs


def test_find_ksmd_and_its_cpu(fake_proc):
    fake_proc.add(100, comm='bash')
    fake_proc.set_ticks(37, 250)
    assert procfs.find_ksmd(fake_proc.root) == 37
    assert procfs.cpu_seconds(37, fake_proc.root) == pytest.approx(
        250 / procfs.CLOCK_TICKS)
    assert procfs.cpu_seconds(999, fake_proc.root) is None


def test_cpu_seconds_with_odd_command_names(fake_proc):
    fake_proc.add(200, comm='a) b (c')
    fake_proc.set_ticks(200, 10, comm='a) b (c')
    assert procfs.cpu_seconds(200, fake_proc.root) == pytest.approx(
        10 / procfs.CLOCK_TICKS)


def test_ksmd_cpu_percent(fake_proc, clock):
    cpu = procfs.KsmdCpu(clock, fake_proc.root)
    assert cpu.sample() is None
    clock.sleep(2.0)
    fake_proc.set_ticks(37, procfs.CLOCK_TICKS)  # one CPU second
    assert cpu.sample() == pytest.approx(50.0)


def test_no_ksmd_means_zero(tmp_path, clock):
    cpu = procfs.KsmdCpu(clock, str(tmp_path))
    assert cpu.pid is None and cpu.total() == 0.0


def test_ksm_stat_parses_both_line_styles(fake_proc):
    fake_proc.add(300, mergeable=True, merging=12, rmap=40)
    stats = procfs.ksm_stat(300, fake_proc.root)
    assert stats['ksm_merging_pages'] == 12
    assert stats['ksm_rmap_items'] == 40
    assert stats['ksm_mergeable'] == 'yes'
    assert procfs.is_mergeable(stats)


def test_old_kernel_falls_back_to_merging_pages(fake_proc):
    import os
    fake_proc.add(301, merging=5)
    os.unlink(os.path.join(fake_proc.root, '301', 'ksm_stat'))
    assert procfs.ksm_stat(301, fake_proc.root) == {'ksm_merging_pages': 5}


@pytest.mark.parametrize('stats,mergeable', [
    (None, False), ({}, False), ({'ksm_mergeable': 'no'}, False),
    ({'ksm_merge_any': 'yes'}, True), ({'ksm_rmap_items': 3}, True),
    ({'ksm_merging_pages': 1}, True),
])
def test_is_mergeable(stats, mergeable):
    assert procfs.is_mergeable(stats) is mergeable


def test_mergeable_processes(fake_proc):
    fake_proc.add(400, mergeable=True)
    fake_proc.add(401)
    assert set(procfs.mergeable_processes(fake_proc.root)) == {400}


def test_watcher_sees_late_madvise_and_exits(fake_proc):
    watcher = procfs.MergeableWatcher(fake_proc.root, rescan_every=100,
                                      young_polls=3)
    fake_proc.add(500)
    assert watcher.poll() == set()
    fake_proc.add(500, mergeable=True)  # qemu madvised its RAM later
    assert watcher.poll() == {500}
    assert watcher.poll() == set()
    fake_proc.remove(500)
    watcher.poll()
    assert watcher.mergeable == {}


def test_watcher_rescans_old_processes(fake_proc):
    watcher = procfs.MergeableWatcher(fake_proc.root, rescan_every=4,
                                      young_polls=1)
    fake_proc.add(600)
    found = [watcher.poll() for _ in range(3)]
    fake_proc.add(600, mergeable=True)
    found += [watcher.poll() for _ in range(2)]
    assert found == [set(), set(), set(), set(), {600}]


def test_process_name_from_libvirt_cmdline(fake_proc):
    fake_proc.add(700, comm='qemu-system-x86', cmdline=[
        '/usr/bin/qemu-system-x86_64', '-name',
        'guest=lab,,vm-01,debug-threads=on', '-m', '64'])
    fake_proc.add(701, comm='python3')
    fake_proc.add(702, comm='qemu', cmdline=['qemu', '-name', 'plain'])
    assert procfs.process_name(700, fake_proc.root) == 'lab,vm-01'
    assert procfs.process_name(701, fake_proc.root) == 'python3'
    assert procfs.process_name(702, fake_proc.root) == 'plain'


def test_resident_pages(fake_proc):
    fake_proc.add(800, rss_pages=4242)
    assert procfs.resident_pages(800, fake_proc.root) == 4242
    assert procfs.resident_pages(801, fake_proc.root) == 0
