"""The write rules of files/base.py, through both implementations.

Each test runs on the host implementation (a temp directory) and on the
appliance implementation (a fake libguestfs handle whose calls follow
symlinks where the real ones do). Which implementation resolves paths
inside the guest is tested elsewhere: test_host.py for the host, and the
functional tests for the real appliance.
"""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk.files import base

Refused = exception.GuestPathRefused
PASSWD = b'root:x:0:0::/root:/bin/sh\n'


@pytest.mark.parametrize('path,reason', [
    ('etc/passwd', 'not absolute'),
    ('', 'not absolute'),
    ('/etc/pa\0sswd', 'NUL'),
    (b'/etc/new-file', 'string'),
    ('/', 'does not name a file'),
    ('/etc/..', 'does not name a file'),
])
def test_bad_paths_refused(guest, path, reason):
    with pytest.raises(Refused, match=reason):
        guest.files.write(path, b'x')
    assert guest.names('/etc') == ['passwd']


def test_path_length_limit(guest, conf):
    conf.config(group='inject', max_injected_file_path_length=10)
    guest.files.write('/etc/short', b'ok')
    for call in (lambda p: guest.files.write(p, b'no'), guest.files.read,
                 guest.files.exists, guest.files.makedirs):
        with pytest.raises(Refused, match='longer than 10'):
            call('/etc/long-name')
    assert guest.names('/etc') == ['passwd', 'short']


def test_data_must_be_bytes(guest):
    with pytest.raises(TypeError, match='bytes'):
        guest.files.write('/etc/new', 'text')


# -- new files and replaced files ----------------------------------------

def test_new_file_gets_mode_and_owner(guest):
    guest.files.write('/etc/new', b'data', mode=0o640, uid=1234, gid=4321)
    assert guest.content('/etc/new') == b'data'
    assert guest.perms('/etc/new') == (0o640, 1234, 4321)


def test_replace_is_a_new_file_with_the_old_mode_and_owner(guest):
    guest.file('/etc/shadow', b'old contents, longer\n', 0o640, 0, 42)
    before = guest.identity('/etc/shadow')
    guest.files.write('/etc/shadow', b'new\n', mode=0o644, uid=9, gid=9)
    assert guest.content('/etc/shadow') == b'new\n'
    assert guest.perms('/etc/shadow') == (0o640, 0, 42)
    assert guest.identity('/etc/shadow') != before  # renamed over
    assert guest.names('/etc') == ['passwd', 'shadow']  # no temp left


def test_replace_with_enforce_sets_mode_and_owner(guest):
    guest.file('/etc/conf', b'old\n', 0o666, 5, 6)
    guest.files.write('/etc/conf', b'new\n', mode=0o600, uid=0, gid=0,
                      enforce=True)
    assert guest.perms('/etc/conf') == (0o600, 0, 0)


def test_planted_temporary_name_is_never_followed(guest, monkeypatch):
    monkeypatch.setattr(base.secrets, 'token_hex', lambda n: 'f' * 2 * n)
    guest.symlink('/etc/.nova-ksm-inject-ffffffffffffffff.tmp',
                  '/etc/passwd')
    with pytest.raises(FileExistsError):
        guest.files.write('/etc/motd', b'owned\n')
    assert guest.content('/etc/passwd') == PASSWD
    assert guest.perms('/etc/passwd') == (0o644, 0, 0)
    assert guest.kind('/etc/motd') is None


def test_failed_replace_leaves_no_temporary_file(guest, monkeypatch):
    def fail(*args):
        raise OSError(5, 'rename failed (fault injected)')
    monkeypatch.setattr(type(guest.files), '_rename', fail)
    with pytest.raises(OSError, match='fault injected'):
        guest.files.write('/etc/passwd', b'new\n')
    assert guest.names('/etc') == ['passwd']
    assert guest.content('/etc/passwd') == PASSWD


# -- appending -------------------------------------------------------------

def test_append_in_place_keeps_mode_and_owner(guest):
    guest.file('/etc/log', b'one\n', 0o604, 7, 8)
    before = guest.identity('/etc/log')
    guest.files.write('/etc/log', b'two\n', mode=0o600, append=True)
    assert guest.content('/etc/log') == b'one\ntwo\n'
    assert guest.perms('/etc/log') == (0o604, 7, 8)
    assert guest.identity('/etc/log') == before


def test_append_with_enforce_sets_mode_and_owner(guest):
    guest.file('/etc/log', b'one\n', 0o666, 7, 8)
    guest.files.write('/etc/log', b'two\n', mode=0o600, uid=0, gid=0,
                      append=True, enforce=True)
    assert guest.content('/etc/log') == b'one\ntwo\n'
    assert guest.perms('/etc/log') == (0o600, 0, 0)


def test_append_creates_a_missing_file(guest):
    guest.files.write('/etc/fresh', b'x\n', mode=0o600, uid=5, gid=6,
                      append=True)
    assert guest.content('/etc/fresh') == b'x\n'
    assert guest.perms('/etc/fresh') == (0o600, 5, 6)


# -- hard links ------------------------------------------------------------

@pytest.mark.parametrize('append', [False, True])
@pytest.mark.parametrize('enforce', [False, True])
def test_hard_linked_file_is_replaced_never_written_through(guest, append,
                                                            enforce):
    guest.hardlink('/root/keys', '/etc/passwd')
    guest.files.write('/root/keys', b'key\n', mode=0o600, uid=0, gid=0,
                      append=append, enforce=enforce)
    assert guest.content('/etc/passwd') == PASSWD
    assert guest.perms('/etc/passwd') == (0o644, 0, 0)
    assert guest.nlink('/etc/passwd') == 1
    assert guest.content('/root/keys') == (PASSWD if append else b'') + \
        b'key\n'
    assert guest.perms('/root/keys') == (0o600 if enforce else 0o644, 0, 0)
    assert guest.names('/root') == ['keys']


def test_hard_linked_file_keeps_its_other_names_owner(guest):
    guest.file('/etc/shadow', b'root:*:1::::::\n', 0o640, 0, 42)
    guest.hardlink('/etc/shadow-', '/etc/shadow')
    guest.files.write('/etc/shadow', b'root:$6$new:1::::::\n')
    assert guest.content('/etc/shadow-') == b'root:*:1::::::\n'
    assert guest.perms('/etc/shadow') == guest.perms('/etc/shadow-') == (
        0o640, 0, 42)


# -- what is never written -------------------------------------------------

@pytest.mark.parametrize('append', [False, True])
@pytest.mark.parametrize('enforce', [False, True])
@pytest.mark.parametrize('target', ['/etc/passwd', '../etc/passwd'])
def test_final_symlink_is_refused(guest, append, enforce, target):
    target = guest.symlink('/root/keys', target)
    with pytest.raises(Refused, match='symbolic link to ' + target + ';'):
        guest.files.write('/root/keys', b'key\n', mode=0o600,
                          append=append, enforce=enforce)
    assert guest.content('/etc/passwd') == PASSWD
    assert guest.perms('/etc/passwd') == (0o644, 0, 0)
    assert guest.kind('/root/keys') == 'link'


@pytest.mark.parametrize('append', [False, True])
def test_non_regular_targets_refused(guest, append):
    guest.dir('/etc/dir')
    guest.fifo('/etc/fifo')
    for path in ('/etc/dir', '/etc/fifo'):
        with pytest.raises(Refused, match='not a regular file'):
            guest.files.write(path, b'x', append=append)
    assert guest.kind('/etc/dir') == 'dir'
    assert guest.names('/etc/dir') == []


def test_missing_directory_is_file_not_found(guest):
    with pytest.raises(FileNotFoundError):
        guest.files.write('/nope/file', b'x')


# -- reading ---------------------------------------------------------------

def test_read_follows_symlinks_in_the_guest(guest):
    guest.symlink('/etc/motd', '/etc/passwd')
    assert guest.files.read('/etc/motd') == PASSWD
    assert guest.files.exists('/etc/motd')
    assert not guest.files.exists('/etc/missing')


def test_read_refuses_non_regular_and_missing(guest):
    guest.fifo('/etc/fifo')
    for path in ('/etc/fifo', '/etc'):
        with pytest.raises(Refused, match='not a regular file'):
            guest.files.read(path)
    with pytest.raises(FileNotFoundError):
        guest.files.read('/etc/missing')


@pytest.mark.parametrize('append', [False, True])
def test_size_limit(guest, monkeypatch, append):
    monkeypatch.setattr(base, 'READ_LIMIT', 8)
    with pytest.raises(Refused, match='larger than 8 bytes'):
        guest.files.read('/etc/passwd')
    # Appending to a hard-linked file reads it first: the same limit.
    guest.hardlink('/root/keys', '/etc/passwd')
    with pytest.raises(Refused, match='larger than 8 bytes'):
        guest.files.write('/root/keys', b'x', append=True)


# -- directories -----------------------------------------------------------

def test_makedirs_new_ones_get_mode_and_owner_existing_kept(guest):
    guest.files.makedirs('/etc/a/b', mode=0o750, uid=12, gid=34)
    for path in ('/etc/a', '/etc/a/b'):
        assert guest.kind(path) == 'dir'
        assert guest.perms(path) == (0o750, 12, 34)
    assert guest.perms('/etc') == (0o755, 0, 0)
    guest.files.makedirs('/etc/a/b', mode=0o700)  # exists: unchanged
    assert guest.perms('/etc/a/b') == (0o750, 12, 34)


def test_makedirs_enforce_sets_the_last_one_only(guest):
    guest.dir('/root/.ssh', 0o777, 1000, 1000)
    guest.files.makedirs('/root/.ssh', 0o700, enforce=True)
    assert guest.perms('/root/.ssh') == (0o700, 0, 0)
    guest.files.makedirs('/etc/x/y', 0o711, 3, 3, enforce=True)
    assert guest.perms('/etc/x/y') == guest.perms('/etc/x') == (0o711, 3, 3)
    assert guest.perms('/root') == (0o700, 0, 0)
    assert guest.perms('/etc') == (0o755, 0, 0)


@pytest.mark.parametrize('target', ['/etc', '../etc'])
def test_makedirs_enforce_refuses_a_symlinked_last_directory(guest, target):
    guest.symlink('/root/.ssh', target)
    with pytest.raises(Refused, match='/root/.ssh is a symbolic link to'):
        guest.files.makedirs('/root/.ssh', 0o700, 1, 1, enforce=True)
    assert guest.perms('/etc') == (0o755, 0, 0)
    assert guest.names('/etc') == ['passwd']


def test_makedirs_follows_directory_symlinks_on_the_way(guest):
    guest.dir('/srv')
    guest.symlink('/data', '/srv')
    guest.files.makedirs('/data/new', 0o700)
    assert guest.kind('/srv/new') == 'dir'
    guest.files.makedirs('/data', 0o700)  # without enforce: followed
    assert guest.perms('/srv') == (0o755, 0, 0)


@pytest.mark.parametrize('path', ['/etc/passwd/sub', '/dangling/sub'])
def test_makedirs_refuses_non_directories(guest, path):
    guest.symlink('/dangling', '/nowhere/dir')
    with pytest.raises(Refused, match='not a directory'):
        guest.files.makedirs(path)
    assert guest.kind('/nowhere') is None
