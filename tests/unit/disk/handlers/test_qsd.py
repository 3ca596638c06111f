"""The qsd handler: its host checks, and the export handed to the loop
mount, as whom.

The export itself (command line, sandbox, QMP stop) is tested in
tests/unit/disk/test_export.py; the real daemon, FUSE export and loop
mount in tests/functional/disk/test_qsd.py.
"""

import os
import types

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import qsd
from tests.unit.disk import fakes_qmp


@pytest.fixture
def image(tmp_path):
    """A qcow2 overlay whose held descriptor is a file of ours."""
    held = tmp_path / 'held'
    held.write_bytes(b'')
    return disk_image.ImageInfo('/inst/disk', 'qcow2', 2 ** 30,
                                (('/base/root.raw', 'raw'),),
                                source=str(held),
                                backing_sources=(str(held),))


def caller(monkeypatch, uid, image=None, owner=None):
    """Run as ``uid``; ``image``'s held file belongs to ``owner``."""
    monkeypatch.setattr(os, 'geteuid', lambda: uid)
    monkeypatch.setattr(os, 'getegid', lambda: uid + 1)
    if owner is not None:
        real = os.stat
        monkeypatch.setattr(os, 'stat', lambda p, *a, **kw: (
            types.SimpleNamespace(st_uid=owner, st_gid=owner + 1)
            if p == image.tool_path else real(p, *a, **kw)))


class Calls:
    """export.export_image and mount.mount_raw_file, recorded."""

    def __init__(self, monkeypatch):
        self.exports = []
        self.mounts = []
        monkeypatch.setattr(qsd.export, 'export_image', self.export_image)
        monkeypatch.setattr(qsd.mount, 'mount_raw_file', self.mount_raw_file)

    def export_image(self, conf, image, workdir, ids, journal, share=False):
        self.exports.append((conf, image, workdir, ids, share))
        return os.path.join(workdir, 'export.raw')

    def mount_raw_file(self, path, partition, journal):
        self.mounts.append((path, partition))
        return 'guest files'


@pytest.fixture
def calls(monkeypatch):
    return Calls(monkeypatch)


@pytest.fixture
def journal(conf):
    with state.Journal(conf.conf.inject.state_dir, '/inst/disk',
                       'qsd') as journal:
        yield journal


@pytest.mark.parametrize('missing, package', [
    ('bwrap', 'bubblewrap'),
    ('qemu-storage-daemon', 'qemu-system-common'),
    ('losetup', 'mount'), ('mount', 'mount')])
def test_check_host_names_the_debian_package(conf, monkeypatch, missing,
                                             package):
    reason = fakes_qmp.unavailable(qsd.QsdHandler(conf.conf), monkeypatch,
                                   missing)
    assert missing in reason
    assert 'install the Debian package %s' % package in reason


def test_inspection_is_refused_before_anything_is_made(conf, calls, image,
                                                       journal):
    with pytest.raises(exception.HandlerFailed) as err:
        qsd.QsdHandler(conf.conf).mount(image, -1, journal)
    assert 'qsd cannot inspect /inst/disk' in str(err.value)
    assert calls.exports == [] and journal.steps == []


def test_the_export_is_shared_and_loop_mounted(conf, calls, image, journal,
                                               monkeypatch):
    caller(monkeypatch, 1000)
    files = qsd.QsdHandler(conf.conf).mount(image, 2, journal)
    assert files == 'guest files'
    workdir = os.path.join(journal.work_dir, 'qsd')
    assert os.path.isdir(workdir)
    # share: the host kernel's loop driver opens the export.
    assert calls.exports == [(conf.conf, image, workdir, (1000, 1001),
                              True)]
    assert calls.mounts == [(os.path.join(workdir, 'export.raw'), 2)]


def test_root_exports_as_the_images_owner(conf, calls, image, journal,
                                          monkeypatch):
    caller(monkeypatch, 0, image, owner=4321)
    qsd.QsdHandler(conf.conf).mount(image, 0, journal)
    assert calls.exports[0][3] == (4321, 4322)


def test_roots_own_image_is_refused(conf, calls, image, journal,
                                    monkeypatch):
    caller(monkeypatch, 0, image, owner=0)
    with pytest.raises(exception.HandlerFailed) as err:
        qsd.QsdHandler(conf.conf).mount(image, 0, journal)
    # Named by its path, not by the descriptor it is held as.
    assert str(err.value).startswith('/inst/disk belongs to root')
    assert calls.exports == [] and calls.mounts == []


def test_the_chain_skips_it_for_inspection_not_for_qcow2(conf, image):
    handler = qsd.QsdHandler(conf.conf)
    assert handler.skip_reason(image, 0, need_cow=True) is None
    assert 'cannot inspect' in handler.skip_reason(image, -1, need_cow=True)
    assert handler.kernel_mount
