"""The fuse2fs handler on real images, called by root.

Root runs the sandboxed helpers as the image's owner (``nobody`` here),
never as root. Images are built with mkfs/sfdisk/qemu-img and read back
with debugfs (qcow2 flattened with qemu-img first); backing files keep
their sha256. What fuse2fs cannot serve falls through with its reason.
``no_leaks`` checks that no mount, helper process or journal record stays.
The same handler run by a user with no sudo rule at all is tested in
``tests/functional/unprivileged``.
"""

import os
import subprocess

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from tests.functional.conftest import Debugfs
from tests.functional.conftest import Images
from tests.functional.conftest import sh
from tests.functional.disk.test_loop import assert_full_injection
from tests.functional.disk.test_loop import full_request
from tests.functional.disk.test_qsd import sha256

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFunctionalFuse2fs fuse2fs@ci'


@pytest.fixture
def cache(images):
    path = images.path('_base')
    os.makedirs(path)
    return path


def inject_fuse2fs(image, request, partition, trusted=(), **kwargs):
    return api.inject_data(Images.give(image), request, partition=partition,
                           handler_names=['fuse2fs'], use_cow=True,
                           trusted_dirs=list(trusted), **kwargs)


def helpers():
    out = subprocess.run(['ps', '-eww', '-o', 'stat,args'],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if ('fuse2fs' in line or 'qemu-storage-daemon' in line)
            and 'bwrap' in line and not line.startswith('Z')]


def test_raw_whole_disk_written_in_place(images, no_leaks):
    image = images.raw_fs()
    result = inject_fuse2fs(image, full_request(), 0)
    assert result.handler == 'fuse2fs'
    assert [a.outcome for a in result.attempts] == ['used']
    assert_full_injection(Debugfs(image))


@pytest.mark.parametrize('layout', ['raw_mbr', 'raw_gpt'])
def test_partitioned_raw(images, no_leaks, layout):
    built = getattr(images, layout)()
    image, offset = built
    partition = 2 if layout == 'raw_mbr' else 1
    inject_fuse2fs(image, full_request(), partition)
    assert_full_injection(Debugfs(image, offset))


def test_qcow2_overlay_on_partitioned_base(images, cache, no_leaks):
    base, offset = images.raw_mbr('_base/mbr.raw')
    before = sha256(base)
    overlay = images.qcow2_overlay(base, 'disk.qcow2', 'raw')
    result = inject_fuse2fs(overlay, full_request(), 2, [cache],
                            fmt='qcow2')
    assert result.handler == 'fuse2fs'
    assert sha256(base) == before, 'the backing file changed'
    assert_full_injection(Debugfs(images.to_raw(overlay), offset))


def test_three_layer_chain_writes_only_the_top(images, cache, no_leaks):
    base = images.raw_fs('_base/base.raw')
    middle = images.qcow2_overlay(base, '_base/middle.qcow2', 'raw')
    sums = sha256(base), sha256(middle)
    top = images.qcow2_overlay(middle, 'disk.qcow2', 'qcow2')
    inject_fuse2fs(top, inject.InjectionRequest(key=KEY), 0, [cache],
                   fmt='qcow2')
    assert (sha256(base), sha256(middle)) == sums
    keys = Debugfs(images.to_raw(top)).cat('/root/.ssh/authorized_keys')
    assert keys.count(KEY) == 1


def test_helpers_run_as_the_owner_and_are_gone_after(images, no_leaks,
                                                     monkeypatch):
    """While the guest is mounted, the helpers run as the image's owner
    (nobody), in bubblewrap; after the call none is left."""
    seen = []
    real = inject.inject_data

    def watching(files, request, **kwargs):
        seen.extend(helpers())
        return real(files, request, **kwargs)
    monkeypatch.setattr(api.inject, 'inject_data', watching)
    base = images.raw_fs('_base.raw')
    overlay = images.qcow2_overlay(base, 'disk.qcow2', 'raw')
    inject_fuse2fs(overlay, inject.InjectionRequest(key=KEY), 0,
                   [images.base], fmt='qcow2')
    assert any('fuse2fs' in s for s in seen) and \
        any('qemu-storage-daemon' in s for s in seen), seen
    owners = subprocess.run(['ps', '-o', 'user=,args=', '-C', 'fuse2fs'],
                            capture_output=True, text=True).stdout
    assert 'root' not in owners
    assert not helpers()


def test_image_of_root_is_refused_not_written_as_root(images, no_leaks):
    image = images.raw_fs()
    before = sha256(image)
    with pytest.raises(exception.NoHandlerMounted,
                       match='belongs to root.*never run as root'):
        api.inject_data(image, inject.InjectionRequest(key=KEY),
                        partition=0, handler_names=['fuse2fs'], use_cow=False)
    assert sha256(image) == before


def _refused(image, *words):
    with pytest.raises(exception.NoHandlerMounted) as err:
        inject_fuse2fs(image, inject.InjectionRequest(key=KEY), 0)
    for word in words:
        assert word in str(err.value)


def test_xfs_falls_through_naming_it(images, no_leaks):
    image = images.path('xfs.raw')
    sh('qemu-img', 'create', '-q', '-f', 'raw', image, '300M')
    sh('mkfs.xfs', '-q', image)
    _refused(image, 'fuse2fs:', 'holds xfs', 'ext2/3/4 only')


def test_journal_needing_recovery_falls_through(images, no_leaks):
    image = images.raw_fs()
    sh('debugfs', '-w', '-R', 'feature needs_recovery', image)
    before = sha256(image)
    _refused(image, 'needs journal recovery')
    assert sha256(image) == before


def test_unknown_feature_falls_through_with_fuse2fs_words(images, no_leaks):
    image = images.raw_fs()
    sh('debugfs', '-w', '-R', 'ssv feature_incompat 0x80000242', image)
    before = sha256(image)
    _refused(image, 'fuse2fs could not serve', 'unsupported feature')
    assert sha256(image) == before


def test_default_chain_starts_with_fuse2fs(images, no_leaks, conf):
    """No handler of the default chain mounts in the host kernel."""
    assert list(api.CONF.img_handlers) == ['fuse2fs', 'guestfs']
    handlers = api.load_handlers(api.CONF.img_handlers)
    assert not any(h.kernel_mount for h in handlers)
    assert not any(h.privileged for h in handlers)
    image = images.raw_fs()
    result = api.inject_data(Images.give(image),
                             inject.InjectionRequest(key=KEY), partition=0,
                             use_cow=False)
    assert result.handler == 'fuse2fs'


def test_default_chain_takes_xfs_to_guestfs(images, no_leaks, conf):
    """The default order: an XFS qcow2 overlay (RHEL-family images) passes
    fuse2fs, which names the type, and libguestfs injects it; read back
    by the kernel in a read-only mount of a flattened copy."""
    from tests.functional.disk.test_filesystems import build_base
    from tests.functional.disk.test_filesystems import kernel_read

    base = build_base(images, 'xfs')
    overlay = images.give(images.qcow2_overlay(base, 'disk.qcow2', 'raw'))
    result = api.inject_data(overlay, inject.InjectionRequest(key=KEY),
                             fmt='qcow2', partition=0, use_cow=True,
                             trusted_dirs=[images.path('_base')])
    assert [(a.handler, a.outcome) for a in result.attempts] == [
        ('fuse2fs', 'failed'), ('guestfs', 'used')]
    assert 'holds xfs' in result.attempts[0].reason
    keys = kernel_read(images, overlay, 'xfs', '/root/.ssh/authorized_keys')
    assert KEY in keys
