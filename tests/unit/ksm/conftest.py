"""Fake KSM sysfs and procfs trees for the KSM unit tests."""

import os

import pytest

from nova_ksm_inject.ksm import settings as ksm_settings
from nova_ksm_inject.ksm import statedir as ksm_statedir
from nova_ksm_inject.ksm import sysfs as ksm_sysfs

# /sys/kernel/mm/ksm of a Linux 6.18 host with the kernel defaults.
KSM_618 = {
    'advisor_max_cpu': '70', 'advisor_max_pages_to_scan': '30000',
    'advisor_min_pages_to_scan': '500', 'advisor_mode': '[none] scan-time',
    'advisor_target_scan_time': '200', 'full_scans': '0',
    'general_profit': '0', 'ksm_zero_pages': '0', 'max_page_sharing': '256',
    'merge_across_nodes': '1', 'pages_scanned': '0', 'pages_shared': '0',
    'pages_sharing': '0', 'pages_skipped': '0', 'pages_to_scan': '100',
    'pages_unshared': '0', 'pages_volatile': '0', 'run': '0',
    'sleep_millisecs': '20', 'smart_scan': '1',
    'stable_node_chains': '0', 'stable_node_chains_prune_millisecs': '2000',
    'stable_node_dups': '0', 'use_zero_pages': '0',
}
# What a 5.15 kernel has: no advisor, no smart_scan, no profit counters.
OLD_KERNEL_MISSING = ('advisor_max_cpu', 'advisor_max_pages_to_scan',
                      'advisor_min_pages_to_scan', 'advisor_mode',
                      'advisor_target_scan_time', 'general_profit',
                      'ksm_zero_pages', 'pages_scanned', 'pages_skipped',
                      'smart_scan')


class FakeKsm(object):
    """A directory that looks like /sys/kernel/mm/ksm."""

    def __init__(self, root, missing=()):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        for name, value in KSM_618.items():
            if name not in missing:
                self.set(name, value)
        self.sysfs = ksm_sysfs.KsmSysfs(self.root)

    def set(self, name, value):
        with open(os.path.join(self.root, name), 'w') as f:
            f.write('%s\n' % value)

    def get(self, name):
        with open(os.path.join(self.root, name)) as f:
            return f.read().strip()


class FakeProc(object):
    """A directory that looks like /proc, with the files KSM code reads."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)

    def _write(self, pid, name, text):
        os.makedirs(os.path.join(self.root, str(pid)), exist_ok=True)
        with open(os.path.join(self.root, str(pid), name), 'w') as f:
            f.write(text)

    def add(self, pid, comm='python3', cmdline=None, mergeable=False,
            merging=0, rmap=0, rss_pages=1000, ticks=0, own_pages=0):
        """``own_pages``: resident pages outside the mergeable mapping
        (QEMU's own memory, in ``smaps``)."""
        self._write(pid, 'comm', comm + '\n')
        self._write(pid, 'cmdline', '\0'.join(cmdline or [comm]) + '\0')
        self._write(pid, 'statm', '5000 %d 100 1 0 300 0\n' % rss_pages)
        self.set_ticks(pid, ticks, comm)
        self._write(pid, 'ksm_stat',
                    'ksm_rmap_items %d\nksm_zero_pages 0\n'
                    'ksm_merging_pages %d\nksm_process_profit 0\n'
                    'ksm_merge_any: no\nksm_mergeable: %s\n'
                    % (rmap, merging, 'yes' if mergeable else 'no'))
        self._write(pid, 'ksm_merging_pages', '%d\n' % merging)
        kib = 4 * (rss_pages - own_pages)
        self._write(pid, 'smaps', ''.join(
            '%s rw-p 00000000 00:00 0\nRss:%12d kB\nVmFlags: rd wr mr mw '
            'me ac%s\n' % (span, size, flags) for span, size, flags in (
                ('55d0c0000000-55d0c0100000', 4 * own_pages, ''),
                ('7f0000000000-7f0080000000', kib,
                 ' mg' if mergeable else ''))))

    def set_ticks(self, pid, ticks, comm='ksmd', state='S', ppid=1,
                  starttime=100, stime=0, nice=0):
        # stat(5): state 3, ppid 4, utime 14, stime 15, nice 19,
        # starttime 22.
        fields = [state, str(ppid)] + ['0'] * 9 + [str(ticks), str(stime)]
        fields += ['0'] * 3 + [str(nice)] + ['0'] * 2 + [str(starttime)]
        fields += ['0'] * 30
        self._write(pid, 'stat', '%d (%s) %s\n' % (pid, comm,
                                                   ' '.join(fields)))

    def set_runtime(self, pid, ns):
        # schedstat: run time (ns), run-queue wait (ns), timeslices.
        self._write(pid, 'schedstat', '%d 0 0\n' % ns)

    def add_ksmd(self, pid=37, ticks=0):
        self.add(pid, comm='ksmd', rss_pages=0, ticks=ticks)
        os.unlink(os.path.join(self.root, str(pid), 'ksm_stat'))

    def remove(self, pid):
        import shutil
        shutil.rmtree(os.path.join(self.root, str(pid)))


class FakeClock(object):
    """Monotonic time that only moves when slept."""

    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def fake_ksm(tmp_path):
    return FakeKsm(tmp_path / 'ksm')


@pytest.fixture
def fake_proc(tmp_path):
    proc = FakeProc(tmp_path / 'proc')
    proc.add_ksmd()
    return proc


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def statedir(tmp_path, clock):
    return ksm_statedir.KsmStateDir(str(tmp_path / 'state'), clock=clock,
                                    sleeper=clock.sleep)


@pytest.fixture
def settings(tmp_path):
    return ksm_settings.KsmSettings(connection_uri='',
                                    state_dir=str(tmp_path / 'state'))
