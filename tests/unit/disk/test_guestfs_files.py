"""GuestfsFiles keeps HostRootFiles' rules, on a fake libguestfs handle.

The real appliance resolving paths inside the guest is exercised in
tests/functional/disk/test_guestfs.py.
"""

import stat

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import guestfs_files
from tests.unit.disk.fake_guestfs import FakeGuestFS


@pytest.fixture
def guest(conf):
    g = FakeGuestFS()
    for d in ('/etc', '/root', '/srv', '/srv/target'):
        g.add(d, 'dir', mode=0o755)
    g.add('/etc/shadow', data=b'root:*:1::::::\n', mode=0o640, gid=42)
    g.add('/etc/passwd', data=b'root:x:0:0::/root:/bin/sh\n')
    g.add('/etc/motd', 'link', target='/etc/passwd')
    g.add('/abs', 'link', target='/srv/target')
    g.add('/up', 'link', target='../../../../srv/target')
    g.add('/dangling', 'link', target='/nowhere/dir')
    g.add('/dev', 'dir')
    g.add('/dev/zero', 'char')
    return g, guestfs_files.GuestfsFiles(g, conf.conf)


@pytest.mark.parametrize('path', ['relative/path', '', 'a\0b', b'/bytes'])
def test_bad_paths_are_refused_before_any_call(guest, path):
    g, files = guest
    with pytest.raises(exception.GuestPathRefused):
        files.write(path, b'x')
    assert g.calls == []


def test_too_long_path_is_refused(guest, conf):
    conf.config(group='inject', max_injected_file_path_length=20)
    with pytest.raises(exception.GuestPathRefused, match='longer than 20'):
        guest[1].exists('/a' * 20)


def test_replace_keeps_mode_and_owner_and_renames_a_temp_file(guest):
    g, files = guest
    files.write('/etc/shadow', b'new\n', mode=0o600, uid=1, gid=1)
    assert g.nodes['/etc/shadow']['data'] == b'new\n'
    assert (g.nodes['/etc/shadow']['mode'], g.nodes['/etc/shadow']['gid']) \
        == (0o640, 42)
    renames = [c for c in g.calls if c[0] == 'rename']
    assert len(renames) == 1 and renames[0][2] == '/etc/shadow'
    assert renames[0][1].startswith('/etc/.nova-ksm-inject-')
    assert [p for p in g.nodes if 'nova-ksm-inject' in p] == []


def test_new_file_gets_mode_and_owner_chown_before_chmod(guest):
    g, files = guest
    files.write('/root/new', b'data', mode=0o600, uid=7, gid=8)
    node = g.nodes['/root/new']
    assert (node['data'], node['mode'], node['uid'], node['gid']) == (
        b'data', 0o600, 7, 8)
    names = [c[0] for c in g.calls]
    assert names.index('chown') < names.index('chmod')


def test_append_to_existing_keeps_mode(guest):
    g, files = guest
    files.write('/etc/shadow', b'more\n', mode=0o777, append=True)
    assert g.nodes['/etc/shadow']['data'] == b'root:*:1::::::\nmore\n'
    assert g.nodes['/etc/shadow']['mode'] == 0o640


def test_append_creates_a_missing_file(guest):
    g, files = guest
    files.write('/root/keys', b'k\n', mode=0o600, append=True)
    assert g.nodes['/root/keys']['data'] == b'k\n'
    assert g.nodes['/root/keys']['mode'] == 0o600


@pytest.mark.parametrize('append', [False, True])
def test_final_symlink_is_refused_for_write(guest, append):
    g, files = guest
    with pytest.raises(exception.GuestPathRefused, match='/etc/passwd'):
        files.write('/etc/motd', b'owned', append=append)
    assert g.nodes['/etc/passwd']['data'] == b'root:x:0:0::/root:/bin/sh\n'


@pytest.mark.parametrize('path', ['/abs/f', '/up/f', '/../../srv/target/f'])
def test_symlinks_and_dotdot_resolve_inside_the_guest(guest, path):
    g, files = guest
    files.write(path, b'inside')
    assert g.nodes['/srv/target/f']['data'] == b'inside'


def test_missing_parent_is_file_not_found(guest):
    with pytest.raises(FileNotFoundError):
        guest[1].write('/nope/file', b'x')


def test_non_regular_target_is_refused(guest):
    with pytest.raises(exception.GuestPathRefused, match='regular'):
        guest[1].write('/dev/zero', b'x')
    with pytest.raises(exception.GuestPathRefused, match='regular'):
        guest[1].read('/dev/zero')


def test_read_follows_symlinks_in_the_guest(guest):
    assert guest[1].read('/etc/motd') == b'root:x:0:0::/root:/bin/sh\n'


def test_read_and_stat_of_missing_are_file_not_found(guest):
    with pytest.raises(FileNotFoundError):
        guest[1].read('/missing')
    with pytest.raises(FileNotFoundError):
        guest[1].stat('/missing')


def test_stat_returns_mode_with_type(guest):
    mode, uid, gid = guest[1].stat('/etc/shadow')
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o640
    assert (uid, gid) == (0, 42)


def test_makedirs_creates_missing_parents_with_mode_and_owner(guest):
    g, files = guest
    files.makedirs('/root/.ssh/deep', 0o700, 5, 6)
    for path in ('/root/.ssh', '/root/.ssh/deep'):
        node = g.nodes[path]
        assert (node['type'], node['mode'], node['uid'], node['gid']) == (
            'dir', 0o700, 5, 6)
    assert g.nodes['/root']['mode'] == 0o755  # existing one untouched


def test_makedirs_through_a_dir_symlink_stays_inside(guest):
    g, files = guest
    files.makedirs('/abs/new')
    assert g.nodes['/srv/target/new']['type'] == 'dir'


@pytest.mark.parametrize('path', ['/etc/shadow/sub', '/dangling/sub'])
def test_makedirs_refuses_non_directories(guest, path):
    with pytest.raises(exception.GuestPathRefused, match='not a directory'):
        guest[1].makedirs(path)


def test_libguestfs_errors_become_oserror(guest):
    g, files = guest
    with pytest.raises(FileNotFoundError):
        files.chmod('/missing', 0o600)
    with pytest.raises(FileNotFoundError):
        files.chown('/missing', 0, 0)


def test_chmod_and_chown_follow_symlinks_inside(guest):
    g, files = guest
    files.chmod('/abs', 0o700)
    files.chown('/abs', 3, 4)
    node = g.nodes['/srv/target']
    assert (node['mode'], node['uid'], node['gid']) == (0o700, 3, 4)
