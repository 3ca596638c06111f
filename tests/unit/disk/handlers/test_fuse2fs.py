"""The fuse2fs handler's own logic, without fuse2fs, FUSE or root.

Partition tables are partx output; filesystems are synthetic superblocks
in small sparse files; fuse2fs is a stand-in started through the real
sandbox (:mod:`tests.unit.disk.fakes_qmp`). Real images, as root, are in
tests/functional/disk/test_fuse2fs.py.
"""

import os
import struct

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import sandbox
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import fuse2fs
from tests.unit.disk import fakes_qmp

MiB = 2 ** 20
EXTENTS = 0x40  # an ext4-only incompat feature
HAS_JOURNAL = 0x4
RAW = disk_image.ImageInfo('/inst/disk', 'raw', 2 ** 30)


# -- the filesystem -----------------------------------------------------------

def write_ext(path, offset=0, compat=HAS_JOURNAL, incompat=EXTENTS,
              ro_compat=0):
    """An ext superblock (magic and feature words) at ``offset``."""
    with open(path, 'r+b' if os.path.exists(path) else 'wb') as f:
        f.truncate(max(os.path.getsize(path), offset + 128 * 1024))
        f.seek(offset + 1024 + 0x38)
        f.write(struct.pack('<H', 0xEF53))
        f.seek(offset + 1024 + 0x5C)
        f.write(struct.pack('<III', compat, incompat, ro_compat))
    return str(path)


def test_ext4_at_the_start_is_accepted(tmp_path):
    fuse2fs._check_filesystem(write_ext(tmp_path / 'disk'), 0, '/inst/disk')


@pytest.mark.parametrize('compat, incompat', [(0, 0), (HAS_JOURNAL, 0)])
def test_ext2_and_ext3_are_accepted(tmp_path, compat, incompat):
    disk = write_ext(tmp_path / 'disk', compat=compat, incompat=incompat)
    fuse2fs._check_filesystem(disk, 0, '/inst/disk')


def test_ext4_at_a_partition_offset_is_read_there(tmp_path):
    disk = tmp_path / 'disk'
    # At the start, what the partition is not: a filesystem needing
    # recovery. Only the one at the offset counts.
    write_ext(disk, incompat=EXTENTS | 0x4)
    write_ext(disk, offset=MiB)
    fuse2fs._check_filesystem(str(disk), MiB, '/inst/disk')


def test_nothing_at_the_offset_is_refused_though_ext_is_at_zero(tmp_path):
    disk = write_ext(tmp_path / 'disk')
    with pytest.raises(exception.HandlerFailed) as err:
        fuse2fs._check_filesystem(disk, MiB, '/inst/disk')
    assert str(err.value) == (
        '/inst/disk holds no filesystem recognised at offset 1048576; '
        'fuse2fs serves ext2/3/4 only')


def test_xfs_is_refused_naming_it(tmp_path):
    disk = tmp_path / 'disk'
    disk.write_bytes(b'XFSB' + bytes(128 * 1024))
    with pytest.raises(exception.HandlerFailed) as err:
        fuse2fs._check_filesystem(str(disk), 0, '/inst/disk')
    assert '/inst/disk holds xfs at offset 0' in str(err.value)
    assert 'ext2/3/4 only' in str(err.value)


def test_a_journal_needing_recovery_is_refused(tmp_path):
    disk = write_ext(tmp_path / 'disk', incompat=EXTENTS | 0x4)
    with pytest.raises(exception.HandlerFailed) as err:
        fuse2fs._check_filesystem(disk, 0, '/inst/disk')
    assert 'the ext4 filesystem of /inst/disk needs journal recovery' in \
        str(err.value)


def test_an_external_journal_device_is_refused(tmp_path):
    disk = write_ext(tmp_path / 'disk', incompat=0x8)
    with pytest.raises(exception.HandlerFailed) as err:
        fuse2fs._check_filesystem(disk, 0, '/inst/disk')
    assert 'external ext journal' in str(err.value)


# -- the handler --------------------------------------------------------------

@pytest.mark.parametrize('missing, package', [
    ('bwrap', 'bubblewrap'), ('fuse2fs', 'fuse2fs'),
    ('qemu-storage-daemon', 'qemu-system-common')])
def test_check_host_names_the_debian_package(conf, monkeypatch, missing,
                                             package):
    reason = fakes_qmp.unavailable(fuse2fs.Fuse2fsHandler(conf.conf),
                                   monkeypatch, missing)
    assert '%s not found' % missing in reason
    assert 'install the Debian package %s' % package in reason


def test_inspection_is_refused_before_anything_is_made(conf, monkeypatch,
                                                       tmp_path):
    asked = []
    monkeypatch.setattr(sandbox, 'helper_ids',
                        lambda *a, **kw: asked.append(a))
    with state.Journal(str(tmp_path / 'state'), '/inst/disk',
                       'fuse2fs') as journal:
        with pytest.raises(exception.HandlerFailed) as err:
            fuse2fs.Fuse2fsHandler(conf.conf).mount(RAW, -1, journal)
        assert journal.steps == []
    assert 'give the partition number' in str(err.value)
    assert asked == []


# -- stopping fuse2fs ---------------------------------------------------------

#: A fuse2fs that serves until its mount ends (EOF on the descriptor
#: handed over), then exits with argv[1].
SERVER = ('import os, sys\n'
          'os.read(int(sys.argv[2].rsplit("/", 1)[1]), 1)\n'
          'sys.exit(int(sys.argv[1]))\n')


@pytest.fixture
def helpers(tmp_path, monkeypatch, conf):
    helpers = fakes_qmp.Helpers(tmp_path, monkeypatch, conf.conf)
    yield helpers
    helpers.close()


class Server:
    """A stand-in fuse2fs; ``fuse.unmount`` ends its mount."""

    def __init__(self, helpers, monkeypatch, code=0, exits=True):
        self.unmounts = []
        read, self._write = os.pipe()
        self.proc = helpers.python(SERVER, str(code), fds=[read])
        os.close(read)
        self.exits = exits
        monkeypatch.setattr(fuse2fs.fuse, 'unmount', self.unmount)
        monkeypatch.setattr(fuse2fs, 'STOP_TIMEOUT', 0.2)

    def unmount(self, root, lazy=False):
        self.unmounts.append((root, lazy, self.proc.poll()))
        if self.exits:
            self.end()

    def end(self):
        """End its mount (it then exits)."""
        if self._write is not None:
            os.close(self._write)
            self._write = None


def test_stop_unmounts_then_waits_for_a_clean_exit(helpers, monkeypatch):
    server = Server(helpers, monkeypatch)
    fuse2fs._stop_fuse2fs(server.proc, '/w/root', '/inst/disk')
    # Unmounted while it still served, not lazily; then it exited.
    assert server.unmounts == [('/w/root', False, None)]
    assert server.proc.returncode == 0
    assert server.proc.stdout.closed


def test_stop_of_a_fuse2fs_exiting_non_zero_says_writes_may_be_lost(
        helpers, monkeypatch):
    server = Server(helpers, monkeypatch, code=3)
    with pytest.raises(exception.NovaKsmInjectError) as err:
        fuse2fs._stop_fuse2fs(server.proc, '/w/root', '/inst/disk')
    assert str(err.value) == (
        'fuse2fs serving /inst/disk exited 3 after its unmount; the writes '
        'may not all have reached the image')


def test_stop_kills_a_fuse2fs_that_does_not_exit(helpers, monkeypatch):
    server = Server(helpers, monkeypatch, exits=False)
    try:
        with pytest.raises(exception.NovaKsmInjectError) as err:
            fuse2fs._stop_fuse2fs(server.proc, '/w/root', '/inst/disk')
    finally:
        server.end()
    assert server.proc.returncode == -9
    assert 'did not exit' in str(err.value)
    assert 'killed it, the writes may be lost' in str(err.value)
    assert server.proc.stdout.closed


def test_stop_of_a_fuse2fs_that_had_died_only_removes_its_mount(
        helpers, monkeypatch):
    server = Server(helpers, monkeypatch, code=1)
    server.end()  # it died before: why the mount failed
    server.proc.wait(10)
    fuse2fs._stop_fuse2fs(server.proc, '/w/root', '/inst/disk')
    assert server.unmounts == [('/w/root', True, 1)]
