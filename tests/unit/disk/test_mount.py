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


@pytest.mark.parametrize('found,options', [
    ('ext4', 'nosuid,nodev,noexec'),
    ('xfs', 'nosuid,nodev,noexec,nouuid'),
    ('btrfs', 'nosuid,nodev,noexec')])
def test_type_is_given_to_mount(conf, commands, monkeypatch, found,
                                options):
    monkeypatch.setattr(fstype, 'detect', lambda device: found)
    journal = Journal()
    mount.mount_device('/dev/loop7', '/state/work/x/root', journal)
    assert commands == [('mount', '-t', found, '-o', options, '/dev/loop7',
                         '/state/work/x/root')]
    assert journal.pushed == [('mount', {'path': '/state/work/x/root',
                                         'device': '/dev/loop7'})]


@pytest.mark.parametrize('found,words', [
    ('vfat', ['filesystem type vfat', 'allowed_filesystems']),
    (None, ['no filesystem recognised'])])
def test_other_types_are_never_mounted(conf, commands, monkeypatch, found,
                                       words):
    monkeypatch.setattr(fstype, 'detect', lambda device: found)
    journal = Journal()
    with pytest.raises(exception.HandlerFailed) as err:
        mount.mount_device('/dev/loop7', '/mnt', journal)
    for word in words:
        assert word in str(err.value)
    assert commands == [] and journal.pushed == []


def test_allowed_list_is_the_operators(conf, commands, monkeypatch):
    conf.config(group='inject', allowed_filesystems=['xfs'])
    monkeypatch.setattr(fstype, 'detect', lambda device: 'ext4')
    with pytest.raises(exception.HandlerFailed, match=r'\(xfs\)'):
        mount.mount_device('/dev/loop7', '/mnt', Journal())
