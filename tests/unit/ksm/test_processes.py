"""Mergeable processes, QEMU guests and ksmd, against a fake /proc."""

import os

import pytest

from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import processes

QEMU = ['/usr/bin/qemu-system-x86_64', '-name',
        'guest=lab,,vm-01,debug-threads=on', '-S', '-uuid',
        '5f1c2b9e-7a61-4d0e-9d51-0d5d3c9a1f00', '-m', '64']


def test_ksmd_cpu_percent(fake_proc, clock):
    cpu = processes.KsmdCpu(clock, fake_proc.root)
    assert cpu.sample() is None
    clock.sleep(2.0)
    fake_proc.set_ticks(37, procfs.CLOCK_TICKS)  # one CPU second
    assert cpu.sample() == pytest.approx(50.0)


def test_ksmd_cpu_to_the_nanosecond_when_the_kernel_has_schedstat(
        fake_proc, clock):
    cpu = processes.KsmdCpu(clock, fake_proc.root)
    fake_proc.set_ticks(37, 3 * procfs.CLOCK_TICKS)
    assert cpu.total() == pytest.approx(3.0)
    assert cpu.resolution == pytest.approx(1.0 / procfs.CLOCK_TICKS)
    # schedstat's sum, which stat's ticks round: preferred, exact.
    fake_proc.set_runtime(37, 3004000001)
    cpu = processes.KsmdCpu(clock, fake_proc.root)
    assert cpu.total() == pytest.approx(3.004000001, abs=1e-12)
    assert cpu.resolution == 1e-9


def test_no_ksmd_means_zero(tmp_path, clock):
    cpu = processes.KsmdCpu(clock, str(tmp_path))
    assert cpu.pid is None and cpu.total() == 0.0


@pytest.mark.parametrize('stats,mergeable', [
    (None, False), ({}, False), ({'ksm_mergeable': 'no'}, False),
    ({'ksm_merge_any': 'yes'}, True), ({'ksm_rmap_items': 3}, True),
    ({'ksm_merging_pages': 1}, True),
])
def test_is_mergeable(stats, mergeable):
    assert processes.is_mergeable(stats) is mergeable


def test_mergeable_processes(fake_proc):
    fake_proc.add(400, mergeable=True)
    fake_proc.add(401)
    assert set(processes.mergeable_processes(fake_proc.root)) == {400}


def test_before_5_19_qemu_is_found_by_its_smaps(fake_proc):
    for pid, comm in ((402, 'qemu-system-x86'), (403, 'python3')):
        fake_proc.add(pid, comm=comm)
        for name in ('ksm_stat', 'ksm_merging_pages'):
            os.unlink(os.path.join(fake_proc.root, str(pid), name))
        fake_proc._write(pid, 'smaps', 'VmFlags: rd wr mr mw me mg\n')
    assert set(processes.mergeable_processes(fake_proc.root)) == {402}


def test_qemu_guest_from_libvirt_command_line(fake_proc):
    fake_proc.add(700, comm='qemu-system-x86', cmdline=QEMU)
    fake_proc.add(701, comm='python3', cmdline=['python3', '-name', 'x'])
    fake_proc.add(702, comm='qemu', cmdline=['qemu-kvm', '-name', 'plain'])
    fake_proc.add(703, comm='qemu', cmdline=['qemu-img', 'info', 'x'])
    found = processes.qemu_guests(fake_proc.root)
    assert found == {
        700: processes.QemuGuest(700, 'lab,vm-01', QEMU[5]),
        702: processes.QemuGuest(702, 'plain', None)}


def test_process_name_from_libvirt_cmdline(fake_proc):
    fake_proc.add(700, comm='qemu-system-x86', cmdline=QEMU)
    fake_proc.add(701, comm='python3')
    fake_proc.add(702, comm='qemu', cmdline=['qemu', '-name', 'plain'])
    assert processes.process_name(700, fake_proc.root) == 'lab,vm-01'
    assert processes.process_name(701, fake_proc.root) == 'python3'
    assert processes.process_name(702, fake_proc.root) == 'plain'
    assert processes.process_name(799, fake_proc.root) == '799'


def test_watcher_sees_late_madvise_exec_and_exits(fake_proc):
    watcher = processes.MergeableWatcher(fake_proc.root, rescan_every=100,
                                         young_polls=3)
    fake_proc.add(500, cmdline=['libvirtd'])  # libvirt's child, not exec'd
    assert watcher.poll() == set()
    assert watcher.qemu == {}
    fake_proc.add(500, mergeable=True, cmdline=QEMU)  # exec'd, madvised
    assert watcher.poll() == {500}
    assert watcher.qemu[500].name == 'lab,vm-01'
    assert watcher.poll() == set()
    fake_proc.remove(500)
    watcher.poll()
    assert watcher.mergeable == {} and watcher.qemu == {}


def test_watcher_rescans_old_processes(fake_proc):
    watcher = processes.MergeableWatcher(fake_proc.root, rescan_every=4,
                                         young_polls=1)
    fake_proc.add(600)
    found = [watcher.poll() for _ in range(3)]
    fake_proc.add(600, mergeable=True)
    found += [watcher.poll() for _ in range(2)]
    assert found == [set(), set(), set(), set(), {600}]
