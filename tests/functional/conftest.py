"""Shared fixtures for functional tests: real images, real devices, root.

Images are built without mounting (qemu-img, sfdisk, parted, mkfs.ext4 -d)
and read back without mounting (debugfs), so the verifier is independent of
the code under test. ``no_leaks`` fails a test that leaves a loop device,
mount, qemu/guestmount process or journal record behind.
"""

import os
import pwd
import subprocess

from oslo_config import fixture as config_fixture
import pytest

from nova_ksm_inject.conf import CONF
from tests import host_check

MIB = 1024 * 1024
#: Who owns the images root's tests inject with sandboxed helpers.
HELPER_USER = 'nobody'

PASSWD = ('root:x:0:0:root:/root:/bin/bash\n'
          'user:x:1000:1000::/home/user:/bin/sh\n')
SHADOW = ('root:*:19000:0:99999:7:::\n'
          'user:!:19000:0:99999:7:::\n')


#: What the functional tests run (tools/install-packages installs them).
TOOLS = ('losetup', 'partx', 'sfdisk', 'parted', 'mkfs.ext4', 'debugfs',
         'mkfs.xfs', 'mkfs.btrfs', 'qemu-img', 'qemu-storage-daemon',
         'fuse2fs', 'fusermount3', 'bwrap', 'guestfish', 'sudo', 'openssl')


def pytest_sessionstart(session):
    if os.geteuid() == 0:
        host_check.require('functional', TOOLS, libvirtd=True)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason='functional tests need root '
                                       '(loop devices, mounts, KSM)')
        for item in items:
            item.add_marker(skip)


def sh(*cmd, input=None):
    """Run a command for test setup/verification; fail loudly."""
    proc = subprocess.run([str(c) for c in cmd], input=input,
                          capture_output=True, text=True)
    assert proc.returncode == 0, '%s failed: %s' % (cmd, proc.stderr)
    return proc.stdout


def build_tree(root, extra=None):
    """A minimal guest OS tree; ``extra`` maps relative path -> text."""
    files = {'etc/passwd': PASSWD, 'etc/shadow': SHADOW,
             'etc/os-release': 'ID=debian\nVERSION_ID="12"\n',
             'etc/fstab': '/dev/sda1 / ext4 defaults 0 1\n',
             'root/.profile': '# root profile\n'}
    files.update(extra or {})
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
    os.chmod(os.path.join(root, 'etc/shadow'), 0o640)
    os.chmod(os.path.join(root, 'root'), 0o700)
    return root


class Images:
    """Builds real test images in a temporary directory."""

    def __init__(self, base):
        self.base = base
        self.tree = build_tree(os.path.join(base, 'tree'))

    def path(self, name):
        return os.path.join(self.base, name)

    @staticmethod
    def give(path, user=HELPER_USER):
        """Hand an image to an unprivileged user, as nova's disks are
        nova's: the sandboxed helpers that write it run as its owner,
        never as root."""
        info = pwd.getpwnam(user)
        os.chown(path, info.pw_uid, info.pw_gid)
        return path

    def raw_fs(self, name='whole.raw', size_mib=32, tree=None):
        """A raw image that is one ext4 filesystem (partition 0)."""
        path = self.path(name)
        sh('mkfs.ext4', '-q', '-F', '-d', tree or self.tree, path,
           '%dM' % size_mib)
        return path

    def raw_mbr(self, name='mbr.raw', size_mib=48, tree=None):
        """MBR disk: partition 1 = 8 MiB spare, partition 2 = ext4 tree."""
        path = self.path(name)
        sh('qemu-img', 'create', '-q', '-f', 'raw', path, '%dM' % size_mib)
        sh('sfdisk', '-q', path, input='label: dos\n2048,16384,L\n,,L\n')
        start = (2048 + 16384) * 512
        sh('mkfs.ext4', '-q', '-F', '-d', tree or self.tree, '-E',
           'offset=%d' % start, path,
           '%dk' % ((size_mib * MIB - start) // 1024))
        return path, start

    def raw_gpt(self, name='gpt.raw', size_mib=48, tree=None):
        """GPT disk: partition 1 = ext4 tree from 1 MiB to 40 MiB."""
        path = self.path(name)
        sh('qemu-img', 'create', '-q', '-f', 'raw', path, '%dM' % size_mib)
        sh('parted', '-s', path, 'mklabel', 'gpt', 'mkpart', 'root', 'ext4',
           '1MiB', '40MiB')
        sh('mkfs.ext4', '-q', '-F', '-d', tree or self.tree, '-E',
           'offset=%d' % MIB, path, '%dk' % (39 * 1024))
        return path, MIB

    def qcow2_overlay(self, base, name='overlay.qcow2', base_fmt='raw'):
        path = self.path(name)
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F',
           base_fmt, path)
        return path

    def to_raw(self, path, fmt='qcow2'):
        out = path + '.flat'
        sh('qemu-img', 'convert', '-f', fmt, '-O', 'raw', path, out)
        return out


@pytest.fixture
def images(tmp_path):
    return Images(str(tmp_path))


class Debugfs:
    """Independent reader of ext4 images (no mount, no code under test)."""

    def __init__(self, image, offset=0):
        self.spec = image if not offset else '%s?offset=%d' % (image, offset)

    def run(self, request):
        return sh('debugfs', '-R', request, self.spec)

    def cat(self, path):
        return self.run('cat %s' % path)

    def stat(self, path):
        """(mode, uid, gid) of a guest path, as debugfs reports it."""
        fields = self.run('stat %s' % path).split()
        mode = int(fields[fields.index('Mode:') + 1], 8)
        uid = int(fields[fields.index('User:') + 1])
        gid = int(fields[fields.index('Group:') + 1])
        kind = self.run('stat %s' % path).split('Type: ')[1].split()[0]
        kinds = {'regular': 0o100000, 'directory': 0o040000,
                 'symlink': 0o120000}
        return kinds.get(kind, 0) | mode, uid, gid

    def exists(self, path):
        proc = subprocess.run(['debugfs', '-R', 'stat %s' % path, self.spec],
                              capture_output=True, text=True)
        return 'File not found' not in proc.stderr + proc.stdout


@pytest.fixture
def state_conf(tmp_path):
    """CONF with a per-test state dir; undone afterwards."""
    fixture = config_fixture.Config(CONF)
    fixture.setUp()
    fixture.config(group='inject', state_dir=str(tmp_path / 'state'))
    fixture.config(group='guestfs', backend_settings=['force_tcg'])
    yield fixture
    fixture.cleanUp()


@pytest.fixture
def conf(state_conf):
    """The same CONF fixture under the name the unit tests use."""
    return state_conf


def loop_devices(path_prefix):
    out = sh('losetup', '--list', '--noheadings', '--output',
             'NAME,BACK-FILE')
    return [line for line in out.splitlines() if path_prefix in line]


def mounts(path_prefix):
    with open('/proc/mounts') as f:
        return [line for line in f if path_prefix in line.split()[1]]


def qemu_processes():
    """Live qemu/guestmount processes. Zombies hold nothing: the daemons
    are orphaned on purpose and wait for init (PID 1) to reap them."""
    out = subprocess.run(['ps', '-eo', 'pid,stat,args'], capture_output=True,
                         text=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        _pid, stat, args = line.split(None, 2)
        if stat.startswith('Z') or 'ps -eo' in args:
            continue
        if any(p in args for p in ('qemu-storage-daemon', 'guestmount',
                                   'qemu-nbd', 'qemu-system')):
            found.append(line)
    return found


def journal_leftovers(state_dir):
    """Records and work dirs left in an ``[inject] state_dir``."""
    found = []
    for sub in ('journal', 'work'):
        path = os.path.join(state_dir, sub)
        if os.path.isdir(path):
            found += ['%s/%s' % (sub, name) for name in os.listdir(path)]
    return sorted(found)


@pytest.fixture
def no_leaks(tmp_path, state_conf):
    """Fail the test if it leaves devices, mounts, processes or records.

    Only what names this test's directory counts (other test runs may
    share the machine); mounts under the old /tmp location count too,
    since nothing of ours may be mounted there any more.
    """
    yield
    leftovers = {
        'loop devices': loop_devices(str(tmp_path)),
        'mounts': mounts('/tmp/nova-ksm-inject-') + mounts(str(tmp_path)),
        'processes': [p for p in qemu_processes() if str(tmp_path) in p],
        'journal records': journal_leftovers(str(tmp_path / 'state')),
    }
    leftovers = {k: v for k, v in leftovers.items() if v}
    assert not leftovers, 'leaked: %s' % leftovers
