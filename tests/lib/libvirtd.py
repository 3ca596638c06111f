"""A private libvirtd for benchmarks and tests: real guests, nothing shared.

The daemon runs in its own mount and pid namespace (``unshare``) with
tmpfs over /run and libvirt's state directory, a hooks directory bound
over /etc/libvirt/hooks and, on request, a fake KSM tree (or a read-only
one) bound over /sys/kernel/mm/ksm. Its socket lives in its own directory,
so it runs beside any system libvirtd, and when it stops the kernel kills
every process of its namespace: no QEMU can leak. Guests run as root
(``qemu.conf``), so disk images need no ownership changes.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from xml.sax import saxutils

KSM = '/sys/kernel/mm/ksm'

# The namespace's pid 1: mounts, starts virtlogd and libvirtd, reaps every
# orphan (qemu probes daemonize) and stops libvirtd on SIGTERM. When it
# exits the kernel kills what is left in the namespace.
INIT = r'''
import os, signal, subprocess, sys
base, ksm = sys.argv[1], sys.argv[2]
mounts = [['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run'],
          ['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/var/lib/libvirt'],
          ['--bind', base + '/cache', '/var/cache/libvirt'],
          ['--bind', base + '/hooks', '/etc/libvirt/hooks'],
          ['--bind', base + '/etc-qemu', '/etc/libvirt/qemu'],
          ['--bind', base + '/qemu.conf', '/etc/libvirt/qemu.conf']]
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
QEMU_CONF = 'user = "root"\ngroup = "root"\ndynamic_ownership = 0\n'


def wait_for(predicate, timeout, interval=0.1, what='condition'):
    """``predicate()``'s first true value within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError('timed out after %ss waiting for %s'
                       % (timeout, what))


def domain_xml(name, mib, nosharepages=False, boot=None, disk=None,
               console=None):
    """A TCG (``type='qemu'``) domain; ``boot`` = (kernel, initrd,
    cmdline) with ``disk`` a qcow2 overlay for a booting guest, whose
    serial console goes to the file ``console``."""
    backing = ('<memoryBacking><nosharepages/></memoryBacking>'
               if nosharepages else '')
    os_boot, devices = '', "<memballoon model='none'/>"
    if boot:
        kernel, initrd, cmdline = (saxutils.escape(v) for v in boot)
        os_boot = ('<kernel>%s</kernel><initrd>%s</initrd>'
                   '<cmdline>%s</cmdline>' % (kernel, initrd, cmdline))
    if disk:
        devices = ("<disk type='file' device='disk'><driver name='qemu' "
                   "type='qcow2'/><source file='%s'/><target dev='vda' "
                   "bus='virtio'/></disk>" % saxutils.escape(disk)
                   + devices)
    if console:
        devices += ("<serial type='file'><source path='%s'/></serial>"
                    % saxutils.escape(console))
    return ("<domain type='qemu'><name>%s</name>"
            "<memory unit='MiB'>%d</memory>%s<vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type>%s</os>"
            "<devices>%s</devices></domain>"
            % (saxutils.escape(name), mib, backing, os_boot, devices))


class PrivateLibvirtd(object):
    """One private libvirtd; see the module docstring.

    :param ksm: ``real`` (the host's KSM), ``fake`` (a copy of it bound
        over /sys/kernel/mm/ksm: :attr:`fake_ksm`) or ``fake-ro``.
    """

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
        with open(os.path.join(base, 'qemu.conf'), 'w') as f:
            f.write(QEMU_CONF)

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
        if self.proc.poll() is not None:
            raise RuntimeError('private libvirtd exited: %s'
                               % self.proc.stderr.read().decode()[-500:])
        # The socket exists before libvirtd answers on it (a loaded host).
        self.conn = wait_for(lambda: self._connect(libvirt), 30,
                             interval=0.5, what='libvirtd to answer')
        return self

    def _connect(self, libvirt):
        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError:
            if self.proc.poll() is not None:
                raise
            return None

    def start_domain(self, name=None, mib=64, **kwargs):
        """Create and start a transient TCG domain (see domain_xml)."""
        name = name or 'nki-ksm-%s' % uuid.uuid4().hex[:8]
        return self.conn.createXML(domain_xml(name, mib, **kwargs), 0)

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


SYSTEM_URI = 'qemu:///system'


def restart_system_libvirtd(pidfile='/run/libvirtd.pid', timeout=60):
    """Restart the host's libvirtd: it finds hooks only when it starts.

    systemd's unit where systemd runs, else the daemon ``tools/start-daemons``
    started (SIGTERM, then ``libvirtd -d`` again); returns once it answers.
    """
    if os.path.isdir('/run/systemd/system'):
        subprocess.run(['systemctl', 'restart', 'libvirtd'], check=True)
    else:
        with open(pidfile) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists('/proc/%d' % pid), timeout,
                 what='libvirtd %d to stop' % pid)
        subprocess.run(['libvirtd', '-d'], check=True)
    wait_for(lambda: subprocess.run(
        ['virsh', '-c', SYSTEM_URI, 'version'],
        capture_output=True).returncode == 0, timeout, interval=0.2,
        what='libvirtd to answer')
