"""HostRootFiles against a hostile guest tree: nothing lands outside root.

``host`` is a directory standing for the host; the guest tree under ``root``
holds absolute and relative symlinks aimed at it. Every hostile test
compares a recursive listing with checksums of ``host`` before and after.

No link targets the real host's files (``/etc/passwd``): a regression would
then damage the machine running the tests instead of failing one. Links
name the stand-in ``host`` directory by its absolute path, which is the same
trap for an implementation that resolves on the host.
"""

import hashlib
import os
import stat

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import guestpath
from nova_ksm_inject.disk import openat2

# Owners are real as root and recorded per inode otherwise (conftest.py):
# writes default to guest uid 0, which only root may give.
pytestmark = pytest.mark.usefixtures('owners')
Refused = exception.GuestPathRefused


def snapshot(top):
    """Recursive listing of ``top``: path -> (mode, uid, content hash)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                with open(full, 'rb') as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = 'link:' + os.readlink(full)
            else:
                digest = 'dir'
            found[os.path.relpath(full, top)] = (st.st_mode, st.st_uid,
                                                 digest)
    return found


@pytest.fixture
def host(tmp_path):
    outside = tmp_path / 'outside-dir'
    (outside / 'network').mkdir(parents=True)
    (outside / 'passwd').write_bytes(b'host:secret\n')
    (outside / 'network' / 'interfaces').write_bytes(b'host network\n')
    return outside


@pytest.fixture
def root(tmp_path, host):
    guest = tmp_path / 'root'
    # Absolute links inside the guest name a directory no host has.
    for sub in ('var/lib', 'root/.ssh', 'home/user/.ssh',
                'nki-guest-only-data'):
        (guest / sub).mkdir(parents=True)
    os.symlink(str(host), guest / 'etc')  # /etc -> the host's directory
    os.symlink('../../outside-dir', guest / 'var' / 'up')
    os.symlink('../' * 12 + str(host).lstrip('/'), guest / 'var/lib/deep')
    # ../../etc is the guest's /etc, itself a link to the host directory.
    os.symlink('../../etc/passwd', guest / 'root/.ssh/authorized_keys')
    os.symlink(str(host / 'passwd'), guest / 'home/user/.ssh/authorized_keys')
    (guest / 'nki-guest-only-data' / 'f').write_bytes(b'guest data\n')
    os.symlink('/nki-guest-only-data/f', guest / 'var' / 'to-data')
    return guest


@pytest.fixture(params=['openat2', 'walk'])
def files(request, root):
    with guestpath.HostRootFiles(
            str(root), use_openat2=request.param == 'openat2') as opened:
        yield opened


@pytest.fixture
def plain(tmp_path):
    """A benign guest tree: real /etc with passwd."""
    guest = tmp_path / 'plain'
    (guest / 'etc').mkdir(parents=True)
    (guest / 'etc' / 'passwd').write_bytes(GUEST_PASSWD)
    with guestpath.HostRootFiles(str(guest)) as opened:
        yield guest, opened


GUEST_PASSWD = b'root:x:0:0::/root:/bin/sh\n'
HOSTILE_PATHS = [
    '/etc/passwd', '/etc/network/interfaces', '/etc/new',
    '/var/up/passwd', '/var/up/new', '/var/lib/deep/passwd',
    '/var/lib/deep/new', '/root/.ssh/authorized_keys',
    '/home/user/.ssh/authorized_keys',
]


@pytest.mark.parametrize('path', HOSTILE_PATHS)
@pytest.mark.parametrize('append', [False, True])
def test_write_never_reaches_host(files, host, tmp_path, path, append):
    before = snapshot(tmp_path / 'outside-dir')
    with pytest.raises((Refused, FileNotFoundError)):
        files.write(path, b'pwned\n', append=append)
    assert snapshot(host) == before


@pytest.mark.parametrize('path', ['/etc/network', '/var/up/x/y',
                                  '/var/lib/deep/z'])
def test_makedirs_never_reaches_host(files, host, path):
    before = snapshot(host)
    with pytest.raises(Refused):
        files.makedirs(path)
    assert snapshot(host) == before


def test_host_files_invisible_through_symlinks(root):
    with guestpath.HostRootFiles(str(root), use_openat2=True) as files:
        for path in ('/etc/passwd', '/var/up/passwd', '/var/lib/deep/passwd'):
            assert not files.exists(path)
            with pytest.raises(FileNotFoundError):
                files.read(path)


def test_absolute_symlink_resolves_inside_root(root, host):
    # Give the guest its own copy of the directory the link names.
    inside = root / str(host).lstrip('/')
    inside.mkdir(parents=True)
    before = snapshot(host)
    with guestpath.HostRootFiles(str(root), use_openat2=True) as files:
        files.makedirs('/etc/network')
        files.write('/etc/network/interfaces', b'guest net\n')
        files.write('/var/lib/deep/new', b'deep\n')
    assert (inside / 'network' / 'interfaces').read_bytes() == b'guest net\n'
    assert (inside / 'new').read_bytes() == b'deep\n'
    assert snapshot(host) == before


def test_symlinks_followed_for_reads_with_openat2(root):
    with guestpath.HostRootFiles(str(root), use_openat2=True) as files:
        assert files.read('/var/to-data') == b'guest data\n'
        assert stat.S_ISREG(files.stat('/var/to-data')[0])


def test_walk_refuses_every_symlink(root):
    with guestpath.HostRootFiles(str(root), use_openat2=False) as files:
        with pytest.raises(Refused, match='symbolic link'):
            files.read('/var/to-data')
        with pytest.raises(Refused, match='symbolic link'):
            files.exists('/etc/passwd')
        with pytest.raises(Refused, match='symbolic link'):
            files.exists('/var/to-data')
        with pytest.raises(Refused, match='symbolic link'):
            files.stat('/var/to-data')
        with pytest.raises(Refused, match='symbolic link'):
            files.chmod('/var/to-data', 0o600)
        assert files.exists('/nki-guest-only-data/f')


def test_walk_refuses_other_filesystems(root):
    with guestpath.HostRootFiles(str(root), use_openat2=False) as files:
        files._root_dev = -1  # as if /data were another mount
        with pytest.raises(Refused, match='mount point'):
            files.read('/nki-guest-only-data/f')


@pytest.mark.parametrize('use_openat2', [True, False])
@pytest.mark.parametrize('path,landed', [
    ('/../../../escaped', 'escaped'),
    ('/data/../../../../escaped2', 'escaped2'),
    ('/data/sub/../../../data/../dotdot', 'dotdot'),
])
def test_dotdot_stops_at_root(tmp_path, use_openat2, path, landed):
    # Deep enough that a wrong resolution still lands inside tmp_path.
    guest = tmp_path.joinpath('1', '2', '3', '4', '5', 'root')
    (guest / 'data' / 'sub').mkdir(parents=True)
    with guestpath.HostRootFiles(str(guest), use_openat2=use_openat2) as f:
        f.write(path, b'inside\n')
    assert (guest / landed).read_bytes() == b'inside\n'
    outside = {k for k in snapshot(tmp_path) if not k.startswith(
        os.path.relpath(guest, tmp_path))}
    assert outside == {'1', '1/2', '1/2/3', '1/2/3/4', '1/2/3/4/5'}


def test_final_symlink_refused(plain, host):
    """authorized_keys -> /etc/passwd-like target: followed neither in the
    guest nor on the host. The link names the host file by its absolute
    path, and the guest has a file at that same path."""
    guest, files = plain
    target = str(host / 'passwd')
    copy = guest / target.lstrip('/')
    copy.parent.mkdir(parents=True)
    copy.write_bytes(GUEST_PASSWD)
    (guest / 'root' / '.ssh').mkdir(parents=True)
    os.symlink(target, guest / 'root/.ssh/authorized_keys')
    before = snapshot(host), snapshot(guest)
    for append in (True, False):
        with pytest.raises(Refused, match='symbolic link to ' + target):
            files.write('/root/.ssh/authorized_keys', b'key\n', append=append)
    assert (snapshot(host), snapshot(guest)) == before


@pytest.mark.parametrize('path,reason', [
    ('etc/passwd', 'not absolute'),
    ('/etc/pa\0sswd', 'NUL'),
    (b'/etc/new-file', 'string'),
    ('/', 'does not name a file'),
    ('/etc/..', 'does not name a file'),
])
def test_bad_paths_refused(plain, path, reason):
    _guest, files = plain
    with pytest.raises(Refused, match=reason):
        files.write(path, b'x')


def test_path_length_limit(plain, conf):
    guest, files = plain
    conf.config(group='inject', max_injected_file_path_length=10)
    files.write('/etc/short', b'ok')
    with pytest.raises(Refused, match='longer than 10'):
        files.write('/etc/long-name', b'no')
    assert not (guest / 'etc/long-name').exists()


def test_new_file_mode_and_owner(plain, owners):
    guest, files = plain
    files.write('/etc/new', b'data', mode=0o640, uid=1234, gid=4321)
    assert owners.of(guest / 'etc/new') == (0o640, 1234, 4321)
    assert files.stat('/etc/new') == (stat.S_IFREG | 0o640, 1234, 4321)


def test_makedirs_modes_owners_and_existing_kept(plain, owners):
    guest, files = plain
    os.chmod(guest / 'etc', 0o711)
    files.makedirs('/etc/a/b', mode=0o750, uid=12, gid=34)
    for sub in ('etc/a', 'etc/a/b'):
        assert owners.of(guest / sub) == (0o750, 12, 34)
    assert stat.S_IMODE(os.stat(guest / 'etc').st_mode) == 0o711
    files.makedirs('/etc/a/b', mode=0o700)  # existing: nothing changes
    assert stat.S_IMODE(os.stat(guest / 'etc/a/b').st_mode) == 0o750


def test_append_keeps_content_mode_owner(plain, owners):
    guest, files = plain
    target = guest / 'etc' / 'log'
    target.write_bytes(b'one\n')
    os.chmod(target, 0o604)
    owners.chown(target, 7, 8)
    files.write('/etc/log', b'two\n', mode=0o600, uid=0, gid=0, append=True)
    assert target.read_bytes() == b'one\ntwo\n'
    assert owners.of(target) == (0o604, 7, 8)
    files.write('/etc/fresh', b'x\n', mode=0o600, uid=5, gid=6, append=True)
    assert owners.of(guest / 'etc/fresh') == (0o600, 5, 6)


def test_replace_is_atomic_and_keeps_mode_owner(plain, owners):
    guest, files = plain
    target = guest / 'etc' / 'shadow'
    target.write_bytes(b'old contents that are longer\n')
    os.chmod(target, 0o640)
    owners.chown(target, 0, 42)
    old_inode = os.stat(target).st_ino
    files.write('/etc/shadow', b'new\n', mode=0o644, uid=9, gid=9)
    assert target.read_bytes() == b'new\n'
    assert owners.of(target) == (0o640, 0, 42)
    # renamed over, not rewritten in place
    assert os.stat(target).st_ino != old_inode
    assert sorted(os.listdir(guest / 'etc')) == ['passwd', 'shadow']


def test_non_regular_targets_refused(plain):
    guest, files = plain
    os.mkfifo(guest / 'etc' / 'fifo')
    (guest / 'etc' / 'dir').mkdir()
    for path in ('/etc/fifo', '/etc/dir'):
        with pytest.raises(Refused, match='not a regular file'):
            files.write(path, b'x')
        with pytest.raises((Refused, OSError)):
            files.write(path, b'x', append=True)
    with pytest.raises(Refused, match='not a regular file'):
        files.read('/etc/fifo')  # must not block waiting for a writer


def test_read_limit(plain, monkeypatch):
    _guest, files = plain
    monkeypatch.setattr(guestpath, 'READ_LIMIT', 8)
    with pytest.raises(Refused, match='larger than 8 bytes'):
        files.read('/etc/passwd')


def test_makedirs_over_file_fails(plain):
    _guest, files = plain
    with pytest.raises(NotADirectoryError):
        files.makedirs('/etc/passwd/sub')


def test_chmod_chown_follow_links_inside_root(root, owners):
    with guestpath.HostRootFiles(str(root), use_openat2=True) as files:
        files.chmod('/var/to-data', 0o600)
        files.chown('/var/to-data', 55, 66)
    assert owners.of(root / 'nki-guest-only-data' / 'f') == (0o600, 55, 66)
    assert os.path.islink(root / 'var' / 'to-data')


def test_exists_and_read(plain):
    _guest, files = plain
    assert files.exists('/etc/passwd')
    assert files.exists('/etc')
    assert not files.exists('/etc/nothing')
    assert not files.exists('/etc/passwd/below')
    with pytest.raises(FileNotFoundError, match='/etc/nothing'):
        files.read('/etc/nothing')


def test_no_openat2_falls_back_to_walk(monkeypatch, root):
    monkeypatch.setattr(openat2, '_SYS_OPENAT2', None)
    with guestpath.HostRootFiles(str(root)) as files:
        assert files.use_openat2 is False
        with pytest.raises(Refused):
            files.read('/var/to-data')


def test_openat2_probed_by_default(root):
    with guestpath.HostRootFiles(str(root)) as files:
        assert files.use_openat2 is True  # kernel 5.6+ on this machine


def test_no_fd_leak_and_close(files):
    def count():
        return len(os.listdir('/proc/self/fd'))
    before = count()
    for _ in range(3):
        files.makedirs('/data/x/y')
        files.write('/data/x/y/z', b'1')
        files.write('/data/x/y/z', b'2', append=True)
        files.stat('/data/x/y/z')
        files.chmod('/data/x/y/z', 0o600)
        for path in HOSTILE_PATHS:
            with pytest.raises((Refused, FileNotFoundError)):
                files.write(path, b'x')
    assert count() == before
    files.close()
    files.close()  # idempotent
    assert count() == before - 1  # the root directory fd
    with pytest.raises(ValueError, match='closed'):
        files.exists('/data')
