"""``qsd``: qemu-storage-daemon's FUSE export of the image, mounted by loop.

qemu-storage-daemon opens the image (a qcow2 overlay or a raw file) and
exports the guest-visible disk as a plain raw file on a FUSE mount
(:mod:`nova_ksm_inject.disk.export`: sandboxed, as the image's owner,
every layer handed over as a descriptor with an explicit driver); the
host kernel then loop-mounts that file (``disk/mount.py``). Writes go
through qemu's qcow2 driver into the overlay and the backing files stay
read-only: copy-on-write with the host kernel, on hosts without the nbd
driver.

The host kernel parses the guest filesystem, so this handler needs root
(or the privsep daemon) and is for images the operator trusts; the
default ``fuse2fs`` handler serves ext2/3/4 with no privilege at all.
"""

import shutil

from nova_ksm_inject import exception
from nova_ksm_inject.disk import export
from nova_ksm_inject.disk import mount
from nova_ksm_inject.disk import sandbox
from nova_ksm_inject.disk.handlers import base


class QsdHandler(base.ImageHandler):
    """Copy-on-write mount through a qemu-storage-daemon FUSE export."""

    cow = True
    formats = frozenset(['raw', 'qcow2'])
    can_inspect = False
    kernel_mount = True

    def check_host(self):
        sandbox.check_available()
        if not shutil.which('qemu-storage-daemon'):
            raise exception.HandlerUnavailable(
                reason='qemu-storage-daemon not found; install the Debian '
                       'package qemu-system-common (QEMU 6.0 or later)')
        if not shutil.which('losetup') or not shutil.which('mount'):
            raise exception.HandlerUnavailable(
                reason='losetup/mount not found; install the Debian package '
                       'mount')
        mount.check_loop_available()
        sandbox.check_fuse()

    def mount(self, image, partition, journal):
        if partition < 0:
            raise exception.HandlerFailed(
                reason='qsd cannot inspect %s for its root partition; give '
                       'the partition number' % image.path)
        ids = sandbox.helper_ids(image.tool_path, self.conf,
                                 name=image.path)
        workdir = sandbox.work_dir(journal, 'qsd')
        path = export.export_image(self.conf, image, workdir, ids, journal,
                                   share=True)
        return mount.mount_raw_file(path, partition, journal)
