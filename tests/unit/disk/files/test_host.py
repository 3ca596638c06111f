"""HostRootFiles against a hostile guest tree: nothing lands outside root.

``host`` is a directory standing for the host; the guest tree under ``root``
holds absolute and relative symlinks aimed at it. Every hostile test
compares a recursive listing with checksums of ``host`` before and after.
The write rules both implementations share are in test_base.py.

No link targets the real host's files (``/etc/passwd``): a regression would
then damage the machine running the tests instead of failing one. Links
name the stand-in ``host`` directory by its absolute path, which is the same
trap for an implementation that resolves on the host.
"""

import errno
import os

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import openat2
from nova_ksm_inject.disk.files import base
from nova_ksm_inject.disk.files import host as host_files
from tests.fs_snapshot import snapshot

# Owners are real as root and recorded per inode otherwise (conftest.py):
# writes default to guest uid 0, which only root may give.
pytestmark = pytest.mark.usefixtures('owners')
Refused = exception.GuestPathRefused
HostRootFiles = host_files.HostRootFiles


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
    os.symlink(str(host), guest / 'root' / 'host-link')
    return guest


@pytest.fixture(params=['openat2', 'walk'])
def files(request, root):
    with HostRootFiles(str(root),
                       use_openat2=request.param == 'openat2') as opened:
        yield opened


HOSTILE_PATHS = [
    '/etc/passwd', '/etc/network/interfaces', '/etc/new',
    '/var/up/passwd', '/var/up/new', '/var/lib/deep/passwd',
    '/var/lib/deep/new', '/root/.ssh/authorized_keys',
    '/home/user/.ssh/authorized_keys',
]


@pytest.mark.parametrize('path', HOSTILE_PATHS)
@pytest.mark.parametrize('append', [False, True])
@pytest.mark.parametrize('enforce', [False, True])
def test_write_never_reaches_host(files, host, path, append, enforce):
    before = snapshot(host)
    with pytest.raises((Refused, FileNotFoundError)):
        files.write(path, b'pwned\n', mode=0o600, append=append,
                    enforce=enforce)
    assert snapshot(host) == before


@pytest.mark.parametrize('path', ['/etc/network', '/var/up/x/y',
                                  '/var/lib/deep/z', '/root/host-link'])
@pytest.mark.parametrize('enforce', [False, True])
def test_makedirs_never_reaches_host(files, host, path, enforce):
    before = snapshot(host)
    with pytest.raises(Refused):
        files.makedirs(path, 0o700, enforce=enforce)
    assert snapshot(host) == before


def test_host_files_invisible_through_symlinks(root):
    with HostRootFiles(str(root), use_openat2=True) as files:
        for path in ('/etc/passwd', '/var/up/passwd', '/var/lib/deep/passwd'):
            assert not files.exists(path)
            with pytest.raises(FileNotFoundError):
                files.read(path)


def test_absolute_symlink_resolves_inside_root(root, host):
    # Give the guest its own copy of the directory the link names.
    inside = root / str(host).lstrip('/')
    inside.mkdir(parents=True)
    before = snapshot(host)
    with HostRootFiles(str(root), use_openat2=True) as files:
        files.makedirs('/etc/network')
        files.write('/etc/network/interfaces', b'guest net\n')
        files.write('/var/lib/deep/new', b'deep\n')
    assert (inside / 'network' / 'interfaces').read_bytes() == b'guest net\n'
    assert (inside / 'new').read_bytes() == b'deep\n'
    assert snapshot(host) == before


def test_final_symlink_named_like_a_host_file_is_refused(tmp_path, host):
    """The link names the host file by its absolute path, and the guest
    has a file at that same path: followed neither in the guest nor on
    the host."""
    guest = tmp_path / 'plain'
    target = str(host / 'passwd')
    copy = guest / target.lstrip('/')
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b'guest copy\n')
    (guest / 'root' / '.ssh').mkdir(parents=True)
    os.symlink(target, guest / 'root/.ssh/authorized_keys')
    before = snapshot(host), snapshot(guest)
    with HostRootFiles(str(guest)) as files:
        for append in (True, False):
            with pytest.raises(Refused, match='symbolic link to ' + target):
                files.write('/root/.ssh/authorized_keys', b'key\n',
                            append=append, enforce=True)
    assert (snapshot(host), snapshot(guest)) == before


def test_walk_refuses_every_symlink(root):
    with HostRootFiles(str(root), use_openat2=False) as files:
        with pytest.raises(Refused, match='symbolic link'):
            files.read('/var/to-data')
        with pytest.raises(Refused, match='symbolic link'):
            files.exists('/etc/passwd')
        with pytest.raises(Refused, match='symbolic link'):
            files.exists('/var/to-data')
        with pytest.raises(Refused, match='symbolic link'):
            files.write('/var/up/x', b'x')
        assert files.exists('/nki-guest-only-data/f')


def test_walk_refuses_other_filesystems(root):
    with HostRootFiles(str(root), use_openat2=False) as files:
        files._root_dev = -1  # as if /data were another mount
        with pytest.raises(Refused, match='mount point'):
            files.read('/nki-guest-only-data/f')


def test_symlinks_followed_for_reads_with_openat2(root):
    with HostRootFiles(str(root), use_openat2=True) as files:
        assert files.read('/var/to-data') == b'guest data\n'


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
    with HostRootFiles(str(guest), use_openat2=use_openat2) as files:
        files.write(path, b'inside\n')
    assert (guest / landed).read_bytes() == b'inside\n'
    outside = {k for k in snapshot(tmp_path) if not k.startswith(
        os.path.relpath(guest, tmp_path))}
    assert outside == {'1', '1/2', '1/2/3', '1/2/3/4', '1/2/3/4/5'}


def test_append_checks_the_file_it_opened(tmp_path, monkeypatch):
    """What lstat saw may be stale: the descriptor decides."""
    guest = tmp_path / 'guest'
    guest.mkdir()
    (guest / 'shadow').write_bytes(b'secret\n')
    os.link(guest / 'shadow', guest / 'keys')
    stale = base.Node(base.FILE, 0o644, 0, 0, nlink=1, size=7)
    monkeypatch.setattr(HostRootFiles, '_lstat', lambda *a: stale)
    with HostRootFiles(str(guest)) as files:
        with pytest.raises(Refused, match='hard link'):
            files.write('/keys', b'key\n', append=True)
    assert (guest / 'shadow').read_bytes() == b'secret\n'


@pytest.mark.parametrize('use_openat2', [True, False])
def test_append_never_follows_a_symlink_swapped_in(tmp_path, host,
                                                   monkeypatch, use_openat2):
    """A guest process (or a second writer) turns the file into a symlink
    between lstat and the append: the open itself must refuse it."""
    guest = tmp_path / 'guest'
    guest.mkdir()
    os.symlink(str(host / 'passwd'), guest / 'keys')
    seen = base.Node(base.FILE, 0o600, 0, 0, nlink=1, size=0)
    monkeypatch.setattr(HostRootFiles, '_lstat', lambda *a: seen)
    before = snapshot(host)
    with HostRootFiles(str(guest), use_openat2=use_openat2) as files:
        with pytest.raises(OSError) as err:
            files.write('/keys', b'key\n', append=True)
    assert err.value.errno == errno.ELOOP
    assert snapshot(host) == before


def test_no_openat2_falls_back_to_walk(monkeypatch, root):
    monkeypatch.setattr(openat2, '_SYS_OPENAT2', None)
    with HostRootFiles(str(root)) as files:
        assert files.use_openat2 is False
        with pytest.raises(Refused):
            files.read('/var/to-data')


def test_openat2_probed_by_default(root):
    with HostRootFiles(str(root)) as files:
        assert files.use_openat2 is True  # kernel 5.6+ on this machine


def test_no_fd_leak_and_close(files):
    def count():
        return len(os.listdir('/proc/self/fd'))
    before = count()
    for _ in range(3):
        files.makedirs('/data/x/y', enforce=True)
        files.write('/data/x/y/z', b'1')
        files.write('/data/x/y/z', b'2', append=True, enforce=True)
        files.read('/data/x/y/z')
        for path in HOSTILE_PATHS:
            with pytest.raises((Refused, FileNotFoundError)):
                files.write(path, b'x')
    assert count() == before
    files.close()
    files.close()  # idempotent
    assert count() == before - 1  # the root directory fd
    with pytest.raises(ValueError, match='closed'):
        files.exists('/data')
