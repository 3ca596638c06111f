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

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

KSM = '/sys/kernel/mm/ksm'
LOCK = '/run/lock/nova-ksm-inject-ksm-tests.lock'
# Every knob the kernel lets root write, restored in this order.
KNOBS = ('advisor_mode', 'pages_to_scan', 'sleep_millisecs',
         'use_zero_pages', 'smart_scan', 'stable_node_chains_prune_millisecs',
         'merge_across_nodes', 'max_page_sharing', 'advisor_max_cpu',
         'advisor_min_pages_to_scan', 'advisor_max_pages_to_scan',
         'advisor_target_scan_time', 'run')
BIN = os.path.dirname(sys.executable)


def read_ksm(name, root=KSM):
    """One KSM file as text; the selected word for advisor_mode."""
    with open(os.path.join(root, name)) as f:
        text = f.read().strip()
    for word in text.split():
        if word.startswith('['):
            return word.strip('[]')
    return text


def read_knobs(root=KSM):
    return {k: read_ksm(k, root) for k in KNOBS
            if os.path.exists(os.path.join(root, k))}


def write_ksm(name, value, root=KSM):
    with open(os.path.join(root, name), 'w') as f:
        f.write(str(value))


def restore_knobs(saved):
    """Write ``saved`` back; unmerge first if a tree knob needs it."""
    if 'advisor_mode' in saved:
        write_ksm('advisor_mode', 'none')
    for name, value in saved.items():
        if name == 'advisor_mode' or read_ksm(name) == value:
            continue
        try:
            write_ksm(name, value)
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            write_ksm('run', 2)
            write_ksm(name, value)
    if 'advisor_mode' in saved:
        write_ksm('advisor_mode', saved['advisor_mode'])
    write_ksm('run', saved['run'])


@pytest.fixture
def ksm_saved():
    """Hold the KSM test lock; save every knob and restore it after."""
    with open(LOCK, 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = read_knobs()
        try:
            yield saved
        finally:
            restore_knobs(saved)
        assert read_knobs() == saved, 'KSM knobs not restored'


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


def merging_pages(pid):
    with open('/proc/%d/ksm_merging_pages' % pid) as f:
        return int(f.read())


def ksmd_cpu_seconds():
    """ksmd's CPU seconds, read straight from /proc."""
    for name in os.listdir('/proc'):
        try:
            with open('/proc/%s/comm' % name) as f:
                if f.read().strip() != 'ksmd':
                    continue
            with open('/proc/%s/stat' % name) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf(
                'SC_CLK_TCK')
        except (OSError, ValueError):
            continue
    raise AssertionError('no ksmd thread')


def wait_for(predicate, timeout, interval=0.1, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError('timed out after %ss waiting for %s'
                         % (timeout, what))


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


# The daemon namespace's pid 1: mounts, starts virtlogd and libvirtd,
# reaps every orphan (qemu probes daemonize) and stops libvirtd on
# SIGTERM. When it exits the kernel kills what is left in the namespace.
INIT = r'''
import os, signal, subprocess, sys
base, ksm = sys.argv[1], sys.argv[2]
mounts = [['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run'],
          ['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/var/lib/libvirt'],
          ['--bind', base + '/cache', '/var/cache/libvirt'],
          ['--bind', base + '/hooks', '/etc/libvirt/hooks'],
          ['--bind', base + '/etc-qemu', '/etc/libvirt/qemu']]
if ksm != 'real':
    mounts.append(['--bind', base + '/ksm', '/sys/kernel/mm/ksm'])
if ksm == 'fake-ro':
    mounts.append(['-o', 'remount,bind,ro', '/sys/kernel/mm/ksm'])
for args in mounts:
    subprocess.check_call(['mount'] + args)
subprocess.check_call(['virtlogd', '-d', '-p', base + '/virtlogd.pid'])
daemon = subprocess.Popen(['libvirtd', '-f', base + '/libvirtd.conf',
                           '-p', base + '/libvirtd.pid'])
signal.signal(signal.SIGTERM, lambda *a: daemon.send_signal(signal.SIGTERM))
while True:
    try:
        if os.wait()[0] == daemon.pid:
            break
    except ChildProcessError:
        break
'''


class PrivateLibvirtd(object):
    """One private libvirtd; see the module docstring."""

    def __init__(self, base, hooks_dir, cache_dir, ksm='fake'):
        self.base = base
        self.ksm = ksm
        self.proc = None
        self.conn = None
        os.makedirs(os.path.join(base, 'etc-qemu'))
        os.symlink(hooks_dir, os.path.join(base, 'hooks'))
        os.symlink(cache_dir, os.path.join(base, 'cache'))
        if ksm != 'real':
            shutil.copytree(KSM, self.fake_ksm, copy_function=_copy_text)
        with open(os.path.join(base, 'libvirtd.conf'), 'w') as f:
            f.write('unix_sock_dir = "%s"\n'
                    'log_outputs = "3:file:%s/libvirtd.log"\n'
                    % (base, base))

    @property
    def fake_ksm(self):
        return os.path.join(self.base, 'ksm')

    @property
    def uri(self):
        return 'qemu:///system?socket=%s/libvirt-sock' % self.base

    def start(self):
        import libvirt
        libvirt.registerErrorHandler(lambda ctx, err: None, None)
        self.proc = subprocess.Popen(
            ['unshare', '--fork', '--pid', '--mount-proc', '--mount',
             '--propagation', 'private', sys.executable, '-c', INIT,
             os.path.realpath(self.base), self.ksm],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sock = os.path.join(self.base, 'libvirt-sock')
        wait_for(lambda: os.path.exists(sock) or self.proc.poll() is not None,
                 30, what='libvirtd socket')
        assert self.proc.poll() is None, self.proc.stderr.read()
        self.conn = libvirt.open(self.uri)
        return self

    def start_domain(self, name=None, mib=64, nosharepages=False):
        name = name or 'nki-ksm-%s' % uuid.uuid4().hex[:8]
        backing = ('<memoryBacking><nosharepages/></memoryBacking>'
                   if nosharepages else '')
        xml = ("<domain type='qemu'><name>%s</name>"
               "<memory unit='MiB'>%d</memory>%s<vcpu>1</vcpu>"
               "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
               "<devices><memballoon model='none'/></devices></domain>"
               % (name, mib, backing))
        return self.conn.createXML(xml, 0)

    def stop(self):
        if self.conn is not None:
            for domain in self.conn.listAllDomains():
                domain.destroy()
            self.conn.close()
            self.conn = None
        if self.proc is not None and self.proc.poll() is None:
            with open('/proc/%d/task/%d/children'
                      % (self.proc.pid, self.proc.pid)) as f:
                for child in f.read().split():
                    os.kill(int(child), signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.proc is not None:
            self.proc.stderr.close()


def _copy_text(src, dst):
    # sysfs files report a size of 4096: copy their text, not their size.
    with open(src) as f:
        text = f.read()
    with open(dst, 'w') as f:
        f.write(text)


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
        daemon = PrivateLibvirtd(os.path.join(base, str(len(started))),
                                 hooks_dir, libvirt_cache, ksm)
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
    and the nova.conf the hook reads (``write(**ksm_options)``)."""
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
    proc = cli('nova-ksm-inject', '--config-file', conf, 'ksm',
               'install-hook', '--hooks-dir', str(hooks))
    assert proc.returncode == 0, proc.stderr
    return hooked
