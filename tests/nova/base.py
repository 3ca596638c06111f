"""Shared setup: nova's NoDBTestCase with nova's fake libvirt, and real
guest images built with mkfs.ext4 and read back with debugfs."""

import os
import subprocess
import sys

import fixtures
from nova import test
from nova.tests import fixtures as nova_fixtures

# nova's loader imports drivers as nova.virt.<compute_driver>.
COMPUTE_DRIVER = 'ksm_inject.LibvirtDriver'

PASSWD = b'root:x:0:0:root:/root:/bin/sh\nlab:x:1000:1000::/home/lab:/bin/sh\n'
SHADOW = b'root:*:19000:0:99999:7:::\nlab:!:19000:0:99999:7:::\n'


class PytestCompatible(object):
    """Mixin for nova test cases run by pytest."""

    def _clear_attrs(self):
        # pytest (8+) sets the test method as an instance attribute while it
        # runs and deletes it afterwards; nova's cleanup deleting every
        # public attribute first makes pytest fail the test.
        name = self._testMethodName
        method = self.__dict__.get(name)
        super()._clear_attrs()
        if method is not None:
            self.__dict__[name] = method

    def logged(self):
        """Everything nova's StandardLogging fixture captured so far."""
        return self.stdlog.logger.output


class DriverTestCase(PytestCompatible, test.NoDBTestCase):
    """nova's own unit-test base plus its fake libvirt (LibvirtFixture)."""

    def setUp(self):
        super().setUp()
        self.libvirt = self.useFixture(nova_fixtures.LibvirtFixture())
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.flags(instances_path=os.path.join(self.tmp, 'instances'))


def disks_owned_by_nova(testcase, user='nobody'):
    """Hand each disk to an unprivileged user before it is injected.

    On a compute node nova-compute runs as ``nova`` and its instance disks
    are nova's; here nova-compute is this (root) process. The sandboxed
    helpers of the default handlers run as a disk's owner and never write
    root's files, so the disks are given away as nova's would be.
    """
    import pwd

    from nova_ksm_inject.disk import api

    owner = pwd.getpwnam(user)
    real = api.inject_data

    def inject_data(path, *args, **kwargs):
        os.chown(path, owner.pw_uid, owner.pw_gid)
        return real(path, *args, **kwargs)
    testcase.useFixture(fixtures.MonkeyPatch(
        'nova_ksm_inject.disk.api.inject_data', inject_data))


def require_root(testcase):
    if os.geteuid() != 0:
        testcase.skipTest('needs root for loop devices and mounts')


def run(*cmd, data=None):
    return subprocess.run(cmd, check=True, capture_output=True,
                          input=data).stdout


def build_guest_image(directory, shadow=True, size='16M'):
    """A raw image holding an ext4 filesystem (no partition table) with a
    minimal Linux tree; built without mounting."""
    tree = os.path.join(directory, 'tree')
    for sub in ('etc', 'root', 'home/lab'):
        os.makedirs(os.path.join(tree, sub), exist_ok=True)
    os.chmod(os.path.join(tree, 'root'), 0o700)
    _write(os.path.join(tree, 'etc', 'passwd'), PASSWD, 0o644)
    if shadow:
        _write(os.path.join(tree, 'etc', 'shadow'), SHADOW, 0o640)
    image = os.path.join(directory, 'guest.raw')
    run('mkfs.ext4', '-q', '-F', '-d', tree, image, size)
    return image


def _write(path, data, mode):
    with open(path, 'wb') as f:
        f.write(data)
    os.chmod(path, mode)


def debugfs_cat(image, path):
    """A guest file as read by e2fsprogs (not through any mount)."""
    return run('debugfs', '-R', 'cat %s' % path, image)


def debugfs_exists(image, path):
    out = subprocess.run(['debugfs', '-R', 'stat %s' % path, image],
                         capture_output=True, text=True)
    return 'File not found' not in out.stderr + out.stdout


def mounts_under(directory):
    """Mount points inside ``directory`` (handlers mount in the temporary
    directory, which nova's test base makes private to each test)."""
    with open('/proc/mounts') as f:
        return [line for line in f if ' %s/' % directory in line]


def loops_backing(prefix):
    out = run('losetup', '-a').decode()
    return [line for line in out.splitlines() if prefix in line]


def verify_sha512_crypt(password, hashed):
    """Check a shadow hash with the system libcrypt, independently."""
    code = ('import ctypes, ctypes.util, sys;'
            'c = ctypes.CDLL(ctypes.util.find_library("crypt")).crypt;'
            'c.restype = ctypes.c_char_p;'
            'print(c(sys.argv[1].encode(), sys.argv[2].encode()).decode())')
    out = run(sys.executable, '-c', code, password, hashed).decode().strip()
    return out == hashed
