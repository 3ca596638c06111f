"""``fuse2fs``: ext2/3/4 served in userspace, with no privilege at all.

The default handler. The caller (nova-compute's user, or root) runs it in
its own process: no privsep, no sudo rule, no loop device, and no host
kernel filesystem ever parses the guest's bytes. Two sandboxed helpers
(:mod:`nova_ksm_inject.disk.sandbox`) do the parsing, as an unprivileged
uid, seeing only the image files and one work directory:

* a qcow2 image (with its backing chain, each layer bound read-only and
  opened with an explicit driver) is exported as a raw disk by
  qemu-storage-daemon's FUSE export; a raw image is used as it is;
* ``fuse2fs -o offset=N,fakeroot`` serves the guest filesystem over FUSE,
  where the guest-file rules of :mod:`nova_ksm_inject.disk.files.host`
  write it (fakeroot: owners and modes are the guest's, unchanged by the
  caller's uid).

Both FUSE mounts are made by the caller and handed over as descriptors
(:mod:`nova_ksm_inject.disk.fuse`). Unmounting the guest makes fuse2fs
flush and close the filesystem and exit; qemu-storage-daemon is then
stopped through its QMP monitor, which it closes after its last image.

A root caller runs the helpers as the image's owner (nova's instance
disks belong to nova); an image that belongs to root is refused
(:func:`~nova_ksm_inject.disk.sandbox.helper_ids`). What
fuse2fs cannot serve -- another filesystem type, a journal that needs
recovery, an external journal, features libext2fs does not know -- fails
with the reason, and the chain moves on (``guestfs``).
"""

import functools
import os
import shutil
import struct
import subprocess

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.disk import export
from nova_ksm_inject.disk import fstype as fstype_mod
from nova_ksm_inject.disk import fuse
from nova_ksm_inject.disk import partitions
from nova_ksm_inject.disk import sandbox
from nova_ksm_inject.disk.files import host
from nova_ksm_inject.disk.handlers import base

LOG = logging.getLogger(__name__)

EXT_TYPES = ('ext2', 'ext3', 'ext4')
#: s_feature_incompat: RECOVER (the journal needs replaying) and
#: JOURNAL_DEV (an external journal device).
_INCOMPAT_AT = 1024 + 0x60
_RECOVER, _JOURNAL_DEV = 0x4, 0x8
#: Seconds fuse2fs gets to flush and exit after its unmount.
STOP_TIMEOUT = 30


def _failed(reason, *args):
    return exception.HandlerFailed(reason=reason % args)


class Fuse2fsHandler(base.ImageHandler):
    """ext2/3/4 through fuse2fs (and qemu-storage-daemon for qcow2)."""

    cow = True
    formats = frozenset(['raw', 'qcow2'])
    can_inspect = False
    kernel_mount = False
    privileged = False

    def check_host(self):
        sandbox.check_available()
        for tool, package in (('fuse2fs', 'fuse2fs'), ('qemu-storage-daemon',
                                                       'qemu-system-common')):
            if not shutil.which(tool):
                raise exception.HandlerUnavailable(
                    reason='%s not found; install the Debian package %s'
                           % (tool, package))
        sandbox.check_fuse()

    def mount(self, image, partition, journal):
        if partition < 0:
            raise _failed('fuse2fs cannot inspect %s for its root '
                          'partition; give the partition number', image.path)
        ids = sandbox.helper_ids(image.tool_path, self.conf,
                                 name=image.path)
        workdir = sandbox.work_dir(journal, 'fuse2fs')
        if image.format == 'qcow2':
            disk = export.export_image(self.conf, image, workdir, ids,
                                       journal, share=os.geteuid() == 0)
        else:
            disk = image.tool_path
        with sandbox.opened(disk) as disk_fd:
            offset = self._offset(disk_fd, partition, image, workdir, ids)
            _check_filesystem(disk, offset, image.path)
            root = self._serve(disk_fd, offset, image, workdir, ids,
                               journal)
        files = host.HostRootFiles(root)
        journal.callback(files.close)
        return files

    # -- the partition and the filesystem -----------------------------------

    def _offset(self, disk_fd, partition, image, workdir, ids):
        if partition == 0:
            return 0
        box = sandbox.Sandbox(self.conf, workdir, *ids)
        try:
            out, _err = box.run(
                *partitions.COMMAND, box.pass_fd(disk_fd),
                action='reading the partition table of %s' % image.path)
        except exception.CommandFailed as err:
            raise _failed('no partition table readable in %s (%s); set '
                          '--partition 0 for a whole-disk filesystem',
                          image.path, err) from err
        offset, _size = partitions.extent(partitions.table(out), partition,
                                          image.path)
        return offset

    # -- fuse2fs --------------------------------------------------------------

    def _serve(self, disk_fd, offset, image, workdir, ids, journal):
        root = journal.make_dir('root')
        journal.push('fuse', path=root)  # before the mount, as in export
        fuse_fd = fuse.mount(root, 'fuse2fs')
        box = sandbox.Sandbox(self.conf, workdir, *ids)
        try:
            disk = box.pass_fd(disk_fd)
            box.directory('/image/root')
            box.fuse_server(fuse_fd)
            proc = box.start('fuse2fs', disk, '/image/root', '-f',
                             '-o', 'offset=%d,fakeroot' % offset)
        finally:
            os.close(fuse_fd)
        journal.push('process', undo_now=functools.partial(
            _stop_fuse2fs, proc, root, image.path), pid=proc.pid,
            marker=workdir, timeout=STOP_TIMEOUT)
        served = sandbox.wait_until(lambda: os.stat(root) is not None,
                                    proc, self.conf.inject.device_timeout)
        if not served:
            raise _failed('fuse2fs could not serve the filesystem of %s: '
                          '%s', image.path, sandbox.last_words(proc))
        LOG.info('fuse2fs %d serves %s (offset %d) at %s', proc.pid,
                 image.path, offset, root)
        return root


def _check_filesystem(disk, offset, image_path):
    """Refuse what fuse2fs cannot serve safely, naming it."""
    fstype = fstype_mod.detect(disk, offset=offset)
    if fstype not in EXT_TYPES:
        raise _failed('%s holds %s at offset %d; fuse2fs serves ext2/3/4 '
                      'only', image_path, fstype or 'no filesystem '
                      'recognised', offset)
    with open(disk, 'rb') as f:
        f.seek(offset + _INCOMPAT_AT)
        incompat, = struct.unpack('<I', f.read(4))
    if incompat & _RECOVER:
        raise _failed('the %s filesystem of %s needs journal recovery (the '
                      'guest was not shut down cleanly), which fuse2fs '
                      'cannot replay', fstype, image_path)
    if incompat & _JOURNAL_DEV:
        raise _failed('%s is an external ext journal, not a filesystem',
                      image_path)


def _stop_fuse2fs(proc, root, image_path):
    """Unmount the guest; fuse2fs then flushes, closes and exits. A
    helper that had already died (its failure was the reason the mount
    failed) leaves only its dead mount to remove."""
    served = proc.poll() is None
    fuse.unmount(root, lazy=not served)
    try:
        code = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        sandbox.kill(proc)
        raise exception.NovaKsmInjectError(
            'fuse2fs serving %s did not exit within %d s of its unmount; '
            'killed it, the writes may be lost' % (image_path, STOP_TIMEOUT))
    finally:
        proc.stdout.close()
    if served and code != 0:
        raise exception.NovaKsmInjectError(
            'fuse2fs serving %s exited %d after its unmount; the writes may '
            'not all have reached the image' % (image_path, code))
