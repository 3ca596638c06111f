"""The /proc reader against fake /proc trees (and the real one, read only)."""

import os

import pytest

from nova_ksm_inject import procfs
from tests.unit.ksm.conftest import FakeProc


@pytest.fixture
def fake_proc(tmp_path):
    proc = FakeProc(tmp_path / 'proc')
    proc.add_ksmd()
    return proc


def test_stat_fields(fake_proc):
    fake_proc.add(200, comm='a) b (c')
    fake_proc.set_ticks(200, 30, comm='a) b (c', state='R', ppid=7,
                        starttime=4242, stime=20)
    info = procfs.stat(200, proc_root=fake_proc.root)
    assert (info.pid, info.comm, info.state, info.ppid, info.starttime,
            info.utime, info.stime) == (200, 'a) b (c', 'R', 7, 4242, 30, 20)
    assert info.cpu_seconds == pytest.approx(50 / procfs.CLOCK_TICKS)
    assert procfs.cpu_seconds(200, fake_proc.root) == info.cpu_seconds


def test_run_seconds_to_the_nanosecond(fake_proc):
    fake_proc.set_runtime(37, 1234567891)
    assert procfs.run_seconds(37, fake_proc.root) == pytest.approx(
        1.234567891, abs=1e-12)
    # A kernel without CONFIG_SCHED_INFO, or a process gone: None.
    assert procfs.run_seconds(999, fake_proc.root) is None


def test_a_gone_process_raises_no_such_process(fake_proc):
    with pytest.raises(procfs.NoSuchProcess) as err:
        procfs.stat(999, proc_root=fake_proc.root)
    assert 'Process 999 does not exist' in str(err.value)
    assert isinstance(err.value.__cause__, FileNotFoundError)
    with pytest.raises(procfs.NoSuchProcess):
        procfs.cmdline(999, proc_root=fake_proc.root)
    assert procfs.cpu_seconds(999, fake_proc.root) is None
    assert procfs.resident_pages(999, fake_proc.root) == 0


def test_unreadable_file_raises_access_denied(fake_proc, monkeypatch):
    def denied(path, binary=False):
        raise PermissionError(13, 'Permission denied', path)
    monkeypatch.setattr(procfs, '_read', denied)
    with pytest.raises(procfs.AccessDenied) as err:
        procfs.cmdline(37, proc_root=fake_proc.root)
    assert 'run as root' in str(err.value)


def test_garbled_stat_is_a_proc_error(fake_proc):
    fake_proc._write(300, 'stat', '300 (x) S 1\n')
    with pytest.raises(procfs.ProcError, match='unexpected format'):
        procfs.stat(300, proc_root=fake_proc.root)


def test_cmdline_and_comm(fake_proc):
    fake_proc.add(400, comm='qemu-system-x86',
                  cmdline=['/usr/bin/qemu-system-x86_64', '-name', 'g'])
    assert procfs.cmdline(400, proc_root=fake_proc.root) == [
        '/usr/bin/qemu-system-x86_64', '-name', 'g']
    assert procfs.comm(400, proc_root=fake_proc.root) == 'qemu-system-x86'
    fake_proc._write(401, 'cmdline', '')  # kernel thread
    assert procfs.cmdline(401, proc_root=fake_proc.root) == []


def test_process_iter_skips_processes_that_vanish(fake_proc):
    fake_proc.add(500)
    os.makedirs(os.path.join(fake_proc.root, '501'))  # exited meanwhile
    found = {info.pid for info in procfs.process_iter(fake_proc.root)}
    assert found == {37, 500}


def test_process_matches_marker_starttime_and_zombies(fake_proc):
    fake_proc.add(600, cmdline=['qemu-storage-daemon', '--export', 'x'])
    fake_proc.set_ticks(600, 0, starttime=77)
    root = fake_proc.root
    assert procfs.process_matches(600, proc_root=root)
    assert procfs.process_matches(600, '--export x', proc_root=root)
    assert not procfs.process_matches(600, 'other', proc_root=root)
    assert procfs.process_matches(600, 'x', starttime=77, proc_root=root)
    # The same pid, started later: another process.
    assert not procfs.process_matches(600, 'x', starttime=78,
                                      proc_root=root)
    assert not procfs.process_matches(601, proc_root=root)
    fake_proc.set_ticks(600, 0, state='Z')
    assert not procfs.process_matches(600, proc_root=root)


def test_start_time_and_running_ignore_the_command_line(fake_proc):
    fake_proc.add(610, cmdline=['qemu-nbd', 'img'])
    fake_proc.set_ticks(610, 0, starttime=91)
    root = fake_proc.root
    assert procfs.start_time(610, proc_root=root) == 91
    assert procfs.start_time(611, proc_root=root) is None
    # A process letting go of its memory has an empty command line, and
    # still runs (and holds its files).
    fake_proc._write(610, 'cmdline', '')
    assert procfs.running(610, proc_root=root)
    assert procfs.running(610, 91, proc_root=root)
    assert not procfs.running(610, 92, proc_root=root)
    assert not procfs.running(611, proc_root=root)
    fake_proc.set_ticks(610, 0, state='Z', starttime=91)
    assert not procfs.running(610, 91, proc_root=root)


def test_mount_points_unescape_mountinfo(tmp_path):
    (tmp_path / 'self').mkdir()
    (tmp_path / 'self' / 'mountinfo').write_bytes(
        b'22 1 8:1 / / rw - ext4 /dev/sda1 rw\n'
        b'90 22 7:0 / /run/a\\040b\\134c rw - ext4 /dev/loop0 rw\n'
        b'91 22 7:1 / /run/\xc3\xa9t\xc3\xa9 rw - xfs /dev/loop1 rw\n')
    assert procfs.mount_points(str(tmp_path)) == [
        '/', '/run/a b\\c', '/run/\u00e9t\u00e9']


def test_mount_points_of_the_real_proc():
    assert '/' in procfs.mount_points()


def test_find_ksmd(fake_proc, tmp_path):
    fake_proc.add(100, comm='bash')
    assert procfs.find_ksmd(fake_proc.root) == 37
    assert procfs.find_ksmd(str(tmp_path / 'empty')) is None


def test_ksm_stat_parses_both_line_styles(fake_proc):
    fake_proc.add(300, mergeable=True, merging=12, rmap=40)
    stats = procfs.ksm_stat(300, fake_proc.root)
    assert stats['ksm_merging_pages'] == 12
    assert stats['ksm_rmap_items'] == 40
    assert stats['ksm_mergeable'] == 'yes'


def test_ksm_stat_before_6_1_falls_back_to_merging_pages(fake_proc):
    fake_proc.add(301, merging=5)
    os.unlink(os.path.join(fake_proc.root, '301', 'ksm_stat'))
    assert procfs.ksm_stat(301, fake_proc.root) == {'ksm_merging_pages': 5}
    os.unlink(os.path.join(fake_proc.root, '301', 'ksm_merging_pages'))
    assert procfs.ksm_stat(301, fake_proc.root) is None  # before 5.19


def test_mergeable_vma_from_smaps(fake_proc):
    fake_proc.add(302)
    assert not procfs.has_mergeable_vma(302, fake_proc.root)
    fake_proc._write(302, 'smaps', '7f00-7f10 rw-p 0 00:00 0\n'
                     'Size: 64 kB\nVmFlags: rd wr mr mw me ac mg\n')
    assert procfs.has_mergeable_vma(302, fake_proc.root)


def test_resident_pages(fake_proc):
    fake_proc.add(800, rss_pages=4242)
    assert procfs.resident_pages(800, fake_proc.root) == 4242


def test_meminfo_and_its_pre_3_14_fallback(tmp_path):
    root = tmp_path / 'proc'
    root.mkdir()
    (root / 'meminfo').write_text('MemTotal: 1000 kB\nMemFree: 100 kB\n'
                                  'MemAvailable: 600 kB\nCached: 300 kB\n'
                                  'HugePages_Total: 0\n')
    assert procfs.meminfo(str(root))['MemAvailable'] == 600
    (root / 'meminfo').write_text('MemTotal: 1000 kB\nMemFree: 100 kB\n'
                                  'Cached: 300 kB\n')
    assert procfs.meminfo(str(root))['MemAvailable'] == 400
    with pytest.raises(procfs.ProcError, match='meminfo'):
        procfs.meminfo(str(tmp_path / 'nowhere'))


def test_memory_pressure(tmp_path):
    root = tmp_path / 'proc'
    (root / 'pressure').mkdir(parents=True)
    assert procfs.memory_pressure(str(root)) is None  # no PSI (< 4.20)
    (root / 'pressure' / 'memory').write_text(
        'some avg10=12.50 avg60=3.00 avg300=1.00 total=100\n'
        'full avg10=2.25 avg60=0.00 avg300=0.00 total=10\n')
    assert procfs.memory_pressure(str(root)) == {'some': 12.5,
                                                 'full': 2.25}


def test_the_real_proc_reads_this_process():
    info = procfs.stat(os.getpid())
    assert info.ppid == os.getppid() and info.state in 'RS'
    assert procfs.process_matches(os.getpid(), 'py',
                                  starttime=info.starttime)
    assert procfs.PROC_ROOT == '/proc'
