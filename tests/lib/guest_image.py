"""A small bootable Debian guest for the real-guest KSM benchmark.

Built once with ``debootstrap --variant=minbase`` from this machine's own
apt source (``/etc/apt/sources.list.d/debian.sources`` or
``/etc/apt/sources.list``), made into an ext4 disk (``mkfs.ext4 -d``, no
mount, no partition table) and converted to qcow2; cached in
:data:`CACHE_DIR`, under a lock, so that concurrent runs build it once.
Guests boot the host's Debian kernel and initrd (``linux-image-amd64``,
which libguestfs needs anyway) with ``root=/dev/vda``, from one qcow2
overlay each.

At boot the guest prints what it reads from its own disk to its serial
console (:data:`EVIDENCE_SCRIPT`): root's ``authorized_keys``, the files
under :data:`EVIDENCE_DIR` and root's password hash, between
:data:`EVIDENCE_BEGIN` and :data:`EVIDENCE_END`, each line prefixed with
the file's path. The tests that boot it through nova read it back with
nova's ``os-getConsoleOutput``.
"""

import contextlib
import fcntl
import glob
import os
import re
import shutil
import subprocess
import tempfile

from oslo_log import log as logging

from nova_ksm_inject import exception

LOG = logging.getLogger(__name__)

CACHE_DIR = '/var/cache/nova-ksm-inject/bench'
SUITE = 'bookworm'
PACKAGES = 'systemd-sysv,udev,openssh-server,ifupdown'
# The name changes with the recipe, so a cache of an older one is rebuilt.
IMAGE_NAME = 'debian-%s-minbase-3.qcow2' % SUITE
DISK_MIB = 1536
DEFAULT_MIRROR = 'http://deb.debian.org/debian'
KERNEL_ARGS = 'root=/dev/vda rw console=ttyS0 quiet'
EVIDENCE_DIR = '/etc/evidence'
EVIDENCE_BEGIN = 'EVIDENCE-BEGIN'
EVIDENCE_END = 'EVIDENCE-END'
EVIDENCE_SCRIPT = r'''#!/bin/sh
# What this guest read from its own disk at boot, on the serial console,
# in one write, so that no other console output cuts through it.
block=$(
    echo %(begin)s
    for f in /root/.ssh/authorized_keys %(dir)s/*; do
        [ -f "$f" ] && sed -e "s|^|$f: |" -e '$a\' "$f"
    done
    echo "root-hash: $(grep '^root:' /etc/shadow | cut -d: -f2)"
    echo %(end)s
)
printf '%%s\n' "$block" >/dev/ttyS0
''' % {'begin': EVIDENCE_BEGIN, 'end': EVIDENCE_END, 'dir': EVIDENCE_DIR}
EVIDENCE_UNIT = '''[Unit]
Description=Print what nova injected to the serial console
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/evidence

[Install]
WantedBy=multi-user.target
'''


class ImageBuildFailed(exception.NovaKsmInjectError):
    msg_fmt = ("Cannot build the benchmark's Debian guest disk: %(reason)s")


def apt_mirror(paths=('/etc/apt/sources.list.d/debian.sources',
                      '/etc/apt/sources.list')):
    """The Debian mirror this machine installs from."""
    for path in paths:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        match = (re.search(r'^URIs:\s*(\S+)', text, re.M)
                 or re.search(r'^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s', text, re.M))
        if match and 'security' not in match.group(1):
            return match.group(1)
    return DEFAULT_MIRROR


def host_kernel(boot='/boot'):
    """(kernel, initrd) of the newest Debian kernel in ``boot``.

    :raises ImageBuildFailed: no kernel with an initrd.
    """
    for kernel in sorted(glob.glob(os.path.join(boot, 'vmlinuz-*')),
                         reverse=True):
        initrd = os.path.join(boot, 'initrd.img-' + kernel.split(
            'vmlinuz-', 1)[1])
        if os.path.exists(initrd):
            return kernel, initrd
    raise ImageBuildFailed(reason='no /boot/vmlinuz-* with an initrd.img; '
                                  'apt-get install linux-image-amd64')


def boot_args(kernel_args=KERNEL_ARGS):
    """(kernel, initrd, cmdline) for a guest of this image."""
    kernel, initrd = host_kernel()
    return kernel, initrd, kernel_args


def cached_image(cache_dir=CACHE_DIR, progress=LOG.info):
    """The cached guest disk, built first if it is missing."""
    path = os.path.join(cache_dir, IMAGE_NAME)
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    with _locked(os.path.join(cache_dir, '.lock')):
        if not os.path.exists(path):
            progress('Building the Debian guest disk %s (debootstrap, about '
                     'a minute, once)' % path)
            _build(path, cache_dir)
    return path


@contextlib.contextmanager
def _locked(path):
    with open(path, 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(cmd, action, timeout=900):
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True,
                       timeout=timeout)
    except FileNotFoundError as err:
        raise ImageBuildFailed(reason='%s: %s not found; apt-get install '
                                      'debootstrap e2fsprogs qemu-utils'
                                      % (action, cmd[0])) from err
    except subprocess.CalledProcessError as err:
        tail = ' '.join((err.stderr or err.stdout or '').split()[-30:])
        raise ImageBuildFailed(reason='%s failed (exit %d): %s'
                                      % (action, err.returncode, tail)) \
            from err
    except subprocess.TimeoutExpired as err:
        raise ImageBuildFailed(reason='%s took more than %d s'
                                      % (action, timeout)) from err


def _build(path, cache_dir):
    work = tempfile.mkdtemp(prefix='build-', dir=cache_dir)
    try:
        root = os.path.join(work, 'root')
        _run(['debootstrap', '--variant=minbase', '--include=' + PACKAGES,
              SUITE, root, apt_mirror()], 'debootstrap')
        _configure(root)
        raw = os.path.join(work, 'disk.raw')
        _run(['mkfs.ext4', '-q', '-F', '-L', 'guestroot', '-d', root, raw,
              '%dM' % DISK_MIB], 'mkfs.ext4 -d')
        tmp = os.path.join(work, IMAGE_NAME)
        _run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, tmp],
             'qemu-img convert')
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _configure(root):
    """What a cloud image would have: a root filesystem in fstab, a name,
    a network config, no root password (nobody logs in)."""
    files = {
        'etc/fstab': 'LABEL=guestroot / ext4 defaults 0 1\n',
        'etc/hostname': 'bench-guest\n',
        'etc/network/interfaces': 'auto lo\niface lo inet loopback\n',
        'etc/systemd/system/evidence.service': EVIDENCE_UNIT,
        'usr/local/sbin/evidence': EVIDENCE_SCRIPT,
    }
    for name, text in files.items():
        with open(os.path.join(root, name), 'w') as f:
            f.write(text)
    os.chmod(os.path.join(root, 'usr/local/sbin/evidence'), 0o755)
    wants = os.path.join(root, 'etc/systemd/system/multi-user.target.wants')
    os.makedirs(wants, exist_ok=True)
    os.symlink('/etc/systemd/system/evidence.service',
               os.path.join(wants, 'evidence.service'))


def evidence(console):
    """{path: [lines]} of the last evidence block in a console log
    (``root-hash`` holds root's password hash); None before the guest
    printed one."""
    begin = console.rfind(EVIDENCE_BEGIN)
    end = console.find(EVIDENCE_END, begin)
    if begin < 0 or end < 0:
        return None
    found = {}
    for line in console[begin + len(EVIDENCE_BEGIN):end].splitlines():
        name, sep, text = line.strip().partition(': ')
        if sep:
            found.setdefault(name, []).append(text)
        elif line.strip().endswith(':'):
            found.setdefault(line.strip()[:-1], []).append('')
    return found


def overlay(base, path):
    """A qcow2 overlay of ``base`` at ``path`` (the backing format given
    explicitly, never probed)."""
    _run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b',
          base, path], 'qemu-img create overlay')
    return path
