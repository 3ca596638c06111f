"""Fixtures for the real KSM and libvirt tests.

KSM is global to the machine: ``ksm_saved`` holds the lock every KSM test
takes, saves every knob with a reader independent of the code under test,
and restores them afterwards, also when the test fails.

``libvirtd`` starts private libvirt daemons: each runs in its own mount
and pid namespace (``unshare``) with tmpfs over /run and libvirt's state
directories, a temporary hooks directory bound over /etc/libvirt/hooks
and, on request, a fake KSM tree (or a read-only one) bound over
/sys/kernel/mm/ksm. Its socket lives in a temporary directory, so it runs
beside any system libvirtd, and when it stops, the kernel kills every
process of its namespace: no qemu can leak.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.lib import ksm_state
from tests.lib import libvirtd as libvirtd_mod

# The tests' names for the shared KSM-state helpers.
KSM, LOCK, KNOBS, BIN = (ksm_state.KSM, ksm_state.LOCK, ksm_state.KNOBS,
                         ksm_state.BIN)
read_ksm, read_knobs, write_ksm = (ksm_state.read_ksm, ksm_state.read_knobs,
                                   ksm_state.write_ksm)
restore_knobs, tuner_state = ksm_state.restore_knobs, ksm_state.tuner_state
TunerProcess = ksm_state.TunerProcess
merging_pages = ksm_state.merging_pages
ksmd_nice = ksm_state.ksmd_nice


@pytest.fixture
def ksm_saved():
    """Hold the KSM test lock; save every knob and restore it after."""
    with ksm_state.saved() as saved:
        yield saved


def mergeable_pids():
    """Pids whose /proc/<pid>/ksm_stat says they have mergeable memory."""
    found = set()
    for name in os.listdir('/proc'):
        try:
            with open('/proc/%s/ksm_stat' % name) as f:
                if 'ksm_mergeable: yes' in f.read():
                    found.add(int(name))
        except (OSError, ValueError):
            continue
    return found


def ksmd_cpu_seconds():
    """ksmd's CPU seconds, read straight from /proc/<ksmd>/stat."""
    with open('/proc/%d/stat' % ksm_state.ksmd_pid()) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


wait_for = libvirtd_mod.wait_for


def write_conf(path, **ksm):
    """A nova.conf with ``[ksm]`` options."""
    lines = ['[ksm]'] + ['%s = %s' % item for item in sorted(ksm.items())]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def cli(*args, **kwargs):
    """Run one of our console scripts; returns the CompletedProcess."""
    return subprocess.run([os.path.join(BIN, args[0])] + list(args[1:]),
                          capture_output=True, text=True, timeout=60,
                          **kwargs)


def real_ksm_with_tuner(hooked, libvirtd, tmp_path):
    """A private libvirtd on the real KSM with our hook, and a running
    tuner (adaptive, enabled=auto, restore_on_exit) on the same state."""
    daemon = libvirtd(hooked.hooks_dir, ksm='real')
    conf = hooked.write(enabled='auto', policy='adaptive', poll_interval=0.5,
                        restore_on_exit='true')
    tuner = TunerProcess(conf, str(tmp_path / 'tuner.log'), hooked.state_dir)
    return daemon, tuner.start()


@pytest.fixture(scope='session')
def libvirt_cache():
    """qemu capabilities, probed once per session (~1 s each time)."""
    path = tempfile.mkdtemp(prefix='nki-lvcache-')
    yield path
    shutil.rmtree(path)


@pytest.fixture
def libvirtd(libvirt_cache):
    """Start private libvirt daemons: ``libvirtd(hooks_dir, ksm=...)``."""
    started = []
    # Unix socket paths are limited to 108 bytes: keep the base short.
    base = tempfile.mkdtemp(prefix='nki-lv-')

    def start(hooks_dir, ksm='fake'):
        daemon = libvirtd_mod.PrivateLibvirtd(
            os.path.join(base, str(len(started))), hooks_dir, libvirt_cache,
            ksm)
        started.append(daemon)
        return daemon.start()

    yield start
    try:
        for daemon in started:
            daemon.stop()
    finally:
        shutil.rmtree(base)


@pytest.fixture
def hooked(tmp_path):
    """A hooks directory with our hook installed by the real command,
    and the nova.conf the hook reads (``write(**ksm_options)``); removed
    afterwards by the real command, with the hook's settings cache."""
    conf = str(tmp_path / 'nova.conf')
    hooks = tmp_path / 'hooks'

    class Hooked(object):
        state_dir = str(tmp_path / 'state')
        log = str(tmp_path / 'hook.log')
        hooks_dir = str(hooks)

        def write(self, **ksm):
            ksm.setdefault('state_dir', self.state_dir)
            ksm.setdefault('hook_log_file', self.log)
            ksm.setdefault('connection_uri', '')
            return write_conf(conf, **ksm)

        def log_text(self):
            if not os.path.exists(self.log):
                return ''
            with open(self.log) as f:
                return f.read()

    hooked = Hooked()
    hooked.conf = hooked.write()
    # The private libvirtd has its own /run: the shim names the hook's
    # settings cache here (install-hook exports what it was given), and
    # --remove removes it with the hook.
    hooked.cache = str(tmp_path / 'hook-settings.json')
    env = dict(os.environ, NOVA_KSM_INJECT_HOOK_CACHE=hooked.cache)
    proc = cli('nova-ksm-inject', '--config-file', conf, 'ksm',
               'install-hook', '--hooks-dir', str(hooks), env=env)
    assert proc.returncode == 0, proc.stderr
    yield hooked
    proc = cli('nova-ksm-inject', '--config-file', conf, 'ksm',
               'install-hook', '--hooks-dir', str(hooks), '--remove',
               env=env)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(hooked.cache)
