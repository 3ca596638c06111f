"""GuestfsFiles on a fake libguestfs handle: what is particular to the API.

The write rules both implementations share are in test_base.py. Whether
the real appliance keeps symlinks and ``..`` inside the guest can only be
shown by the real appliance: tests/functional/disk/files/test_appliance.py.
"""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk.files import appliance
from nova_ksm_inject.disk.files import base
from tests.unit.disk.fake_guestfs import FakeGuestFS

Refused = exception.GuestPathRefused


@pytest.fixture
def guest(conf):
    g = FakeGuestFS()
    for d in ('/etc', '/root'):
        g.add(d, 'dir', mode=0o755)
    g.add('/etc/shadow', data=b'root:*:1::::::\n', mode=0o640, gid=42)
    g.add('/root/.ssh', 'link', target='/etc')
    return g, appliance.GuestfsFiles(g, conf.conf)


@pytest.mark.parametrize('path', ['relative/path', '', 'a\0b', b'/bytes'])
def test_bad_paths_are_refused_before_any_call(guest, path):
    g, files = guest
    for call in (lambda p: files.write(p, b'x'), files.exists, files.read,
                 files.makedirs):
        with pytest.raises(Refused):
            call(path)
    assert g.calls == []


def test_libguestfs_errors_become_oserror(guest):
    _g, files = guest
    with pytest.raises(FileNotFoundError):
        files.read('/missing')
    with pytest.raises(FileNotFoundError):
        files.write('/missing/file', b'x')


def test_secret_is_written_after_mode_and_owner(guest):
    g, files = guest
    files.write('/etc/shadow', b'root:$6$new:1::::::\n')
    names = [c[0] for c in g.calls]
    first_data = next(i for i, c in enumerate(g.calls)
                      if c[0] == 'write' and c[2])
    assert names.index('lchown') < names.index('chmod') < first_data
    assert 'chown' not in names  # chown follows links; lchown never does


def test_directory_mode_is_checked_on_what_is_changed(guest, monkeypatch):
    """The lstatns base.py saw may be stale: the entry whose mode is set
    is checked again right before (no descriptor to hold here)."""
    g, files = guest
    stale = base.Node(base.DIR, 0o755, 0, 0, nlink=2)
    monkeypatch.setattr(appliance.GuestfsFiles, '_lstat', lambda *a: stale)
    with pytest.raises(Refused, match='changed'):
        files.makedirs('/root/.ssh', 0o700, enforce=True)
    assert g.nodes['/etc']['mode'] == 0o755


def test_append_is_checked_on_what_is_written(guest, monkeypatch):
    g, files = guest
    g.link('/root/keys', '/etc/shadow')
    stale = base.Node(base.FILE, 0o640, 0, 42, nlink=1, size=15)
    monkeypatch.setattr(appliance.GuestfsFiles, '_lstat', lambda *a: stale)
    with pytest.raises(Refused, match='hard link'):
        files.write('/root/keys', b'key\n', append=True)
    assert g.nodes['/etc/shadow']['data'] == b'root:*:1::::::\n'
