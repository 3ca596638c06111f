"""mount_device: the type read from the superblock, checked against
``[inject] allowed_filesystems`` and passed to mount -t (commands faked)."""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import fstype
from nova_ksm_inject.disk import mount


class Journal:
    def __init__(self):
        self.pushed = []

    def push(self, kind, **record):
        self.pushed.append((kind, record))


@pytest.fixture
def commands(monkeypatch):
    calls = []
    monkeypatch.setattr(utils, 'execute',
                        lambda *cmd, **kw: calls.append(cmd) or ('', ''))
    return calls


@pytest.fixture
def detected(monkeypatch):
    """Fake the superblock: ``detected(type, external_journal=False)``."""
    def set_type(found, external_journal=False):
        monkeypatch.setattr(fstype, 'detect', lambda device: found)
        monkeypatch.setattr(fstype, 'external_journal',
                            lambda device: external_journal)
    return set_type


@pytest.mark.parametrize('found,options', [
    ('ext2', 'nosuid,nodev,noexec,errors=remount-ro'),
    ('ext3', 'nosuid,nodev,noexec,errors=remount-ro'),
    ('ext4', 'nosuid,nodev,noexec,errors=remount-ro'),
    ('xfs', 'nosuid,nodev,noexec,nouuid'),
    ('btrfs', 'nosuid,nodev,noexec')])
def test_type_is_given_to_mount(conf, commands, detected, found, options):
    detected(found)
    journal = Journal()
    mount.mount_device('/dev/loop7', '/state/work/x/root', journal)
    assert commands == [('mount', '-t', found, '-o', options, '/dev/loop7',
                         '/state/work/x/root')]
    assert journal.pushed == [('mount', {'path': '/state/work/x/root',
                                         'device': '/dev/loop7'})]


@pytest.mark.parametrize('found,words', [
    ('vfat', ['filesystem type vfat', 'allowed_filesystems']),
    (None, ['no filesystem recognised'])])
def test_other_types_are_never_mounted(conf, commands, detected, found,
                                       words):
    detected(found)
    journal = Journal()
    with pytest.raises(exception.HandlerFailed) as err:
        mount.mount_device('/dev/loop7', '/mnt', journal)
    for word in words:
        assert word in str(err.value)
    assert commands == [] and journal.pushed == []


@pytest.mark.parametrize('found', ['ext3', 'ext4'])
def test_external_journal_is_never_mounted(conf, commands, detected, found):
    detected(found, external_journal=True)
    journal = Journal()
    with pytest.raises(exception.HandlerFailed,
                       match='journal on another device'):
        mount.mount_device('/dev/loop7', '/mnt', journal)
    assert commands == [] and journal.pushed == []


def test_allowed_list_is_the_operators(conf, commands, detected):
    conf.config(group='inject', allowed_filesystems=['xfs'])
    detected('ext4')
    with pytest.raises(exception.HandlerFailed, match=r'\(xfs\)'):
        mount.mount_device('/dev/loop7', '/mnt', Journal())
