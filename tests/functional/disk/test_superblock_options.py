"""A tenant's ext superblock never chooses how the host behaves (root).

``tune2fs -e panic`` (``s_errors``) or ``tune2fs -E mount_opts=errors=panic``
(``s_mount_opts``) would make the first corruption in the image panic the
compute node. While the ``loop`` handler holds such an image mounted, the
kernel's own view of the mount (``/proc/self/mountinfo``, super options)
must say ``errors=remount-ro``: ext4 prints ``errors=`` there whenever the
mount's policy differs from the superblock's, so the check reads the
kernel's effective option, not our command line. An ext4 whose journal is
on another device (named by its superblock) is never mounted.
"""

import os

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk.files import host
from tests.functional.conftest import Debugfs
from tests.functional.conftest import sh

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISuperblockOptions sb@test'


def super_options(mountpoint):
    """The kernel's super options of the mount at ``mountpoint``."""
    target = os.path.realpath(mountpoint)
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields, _sep, tail = line.partition(' - ')
            if fields.split()[4] == target:
                return tail.split()[2].split(',')
    raise AssertionError('%s is not a mount point' % target)


@pytest.fixture
def seen_while_mounted(monkeypatch):
    """Super options of every guest root, read right after its mount."""
    seen = []
    original = host.HostRootFiles.__init__

    def record(self, root, *args, **kwargs):
        seen.append(super_options(root))
        original(self, root, *args, **kwargs)
    monkeypatch.setattr(host.HostRootFiles, '__init__', record)
    return seen


@pytest.mark.parametrize('mkfs,tune', [
    ('mkfs.ext4', ['-e', 'panic']),
    ('mkfs.ext4', ['-E', 'mount_opts=errors=panic']),
    ('mkfs.ext4', ['-e', 'panic', '-E', 'mount_opts=errors=continue']),
    ('mkfs.ext3', ['-e', 'panic']),
    ('mkfs.ext2', ['-e', 'panic'])])
def test_errors_panic_is_never_the_hosts(images, no_leaks,
                                         seen_while_mounted, mkfs, tune):
    image = images.path('panic.raw')
    sh(mkfs, '-q', '-F', '-d', images.tree, image, '32M')
    sh('tune2fs', *tune, image)
    result = api.inject_data(image, inject.InjectionRequest(key=KEY),
                             partition=0, handler_names=['loop'],
                             use_cow=False)
    assert result.handler == 'loop'
    [options] = seen_while_mounted
    assert 'errors=remount-ro' in options, options
    assert KEY in Debugfs(image).cat('/root/.ssh/authorized_keys')


def test_external_journal_is_refused(images, no_leaks, seen_while_mounted):
    journal = images.path('journal.raw')
    image = images.path('external.raw')
    sh('truncate', '-s', '8M', journal)
    sh('mke2fs', '-q', '-F', '-b', '4096', '-O', 'journal_dev', journal)
    device = sh('losetup', '--find', '--show', journal).strip()
    try:
        sh('truncate', '-s', '32M', image)
        sh('mkfs.ext4', '-q', '-F', '-b', '4096', '-J', 'device=' + device,
           '-d', images.tree, image)
    finally:
        sh('losetup', '-d', device)
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(image, inject.InjectionRequest(key=KEY),
                        partition=0, handler_names=['loop'], use_cow=False)
    assert 'journal on another device' in str(err.value)
    assert seen_while_mounted == []
