"""Host-kernel mounts of a raw file: loop device (with an offset for a
partition) and ``mount -o nosuid,nodev,noexec``.

Shared by the ``loop`` handler (the image itself) and the ``qsd`` handler
(qemu-storage-daemon's raw FUSE export of a qcow2). A partition is reached
through a loop device with ``--offset``/``--sizelimit`` read from the
partition table by ``partx`` in user space: it works on hosts whose kernel
has no partition parsers and no device-mapper, and leaves no partition
mapping behind to leak.
"""

import os
import shutil

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import fstype as fstype_mod
from nova_ksm_inject.disk import partitions
from nova_ksm_inject.disk.files import host

LOG = logging.getLogger(__name__)

MOUNT_OPTIONS = 'nosuid,nodev,noexec'


def check_loop_available():
    """Raise HandlerUnavailable unless loop devices can be attached here."""
    if not shutil.which('losetup'):
        raise exception.HandlerUnavailable(
            reason='losetup not found; install the Debian package mount')
    if not os.path.exists('/dev/loop-control'):
        raise exception.HandlerUnavailable(
            reason='no /dev/loop-control: the loop driver is not loaded; '
                   'run modprobe loop')


def partition_extent(path, partition):
    """Return ``(offset, size)`` in bytes of partition N of raw ``path``.

    :raises HandlerFailed: no partition table or no partition N.
    """
    out, _err = utils.execute(
        *partitions.COMMAND, path, check_exit_code=False,
        action='reading the partition table of %s' % path)
    return partitions.extent(partitions.table(out), partition, path)


def attach_loop(path, journal, partition=0, real_path=None):
    """Attach ``path`` (raw) to a free loop device; return the device.

    :param path: what losetup opens (a ``/proc/<pid>/fd/<n>`` path).
    :param real_path: the file's real path, as the kernel reports the
        loop's backing file; defaults to ``path``.
    """
    real_path = real_path or path
    cmd = ['losetup', '--find', '--show']
    if partition > 0:
        offset, size = partition_extent(path, partition)
        cmd += ['--offset', str(offset), '--sizelimit', str(size)]
    out, _err = utils.execute(*cmd, path,
                              action='attaching a loop device to %s'
                              % real_path)
    device = out.strip()
    if not device.startswith('/dev/loop'):
        raise exception.HandlerFailed(
            reason='losetup returned no device for %s: %r'
                   % (real_path, out))
    journal.push('loop', device=device, backing=real_path)
    LOG.debug('Attached %s to %s (partition %d)', real_path, device,
              partition)
    return device


def allowed_type(device, conf=None):
    """The filesystem type on ``device``, if ``[inject]
    allowed_filesystems`` lets the host kernel mount it.

    :raises HandlerFailed: no filesystem, a type not allowed, or an ext
        journal on another device; the chain moves on (to ``guestfs``,
        which parses it in an appliance).
    """
    allowed = (conf or CONF).inject.allowed_filesystems
    fstype = fstype_mod.detect(device)
    if fstype is None:
        raise exception.HandlerFailed(
            reason='no filesystem recognised on %s; if the image has a '
                   'partition table, choose the partition with --partition '
                   'N or [libvirt] inject_partition' % device)
    if fstype not in allowed:
        raise exception.HandlerFailed(
            reason='filesystem type %s on %s is not in [inject] '
                   'allowed_filesystems (%s): the host kernel does not '
                   'mount it; add it there if you trust its driver with '
                   'tenant data, or use the guestfs handler'
                   % (fstype, device, ', '.join(allowed) or 'none'))
    if fstype.startswith('ext') and fstype_mod.external_journal(device):
        raise exception.HandlerFailed(
            reason='the %s filesystem on %s keeps its journal on another '
                   'device, which its superblock names: the host kernel '
                   'would open a host device of the image\'s choosing, so '
                   'it does not mount it; use the guestfs handler'
                   % (fstype, device))
    return fstype


def mount_device(device, mountpoint, journal, conf=None):
    """Mount ``device`` at ``mountpoint``: nosuid,nodev,noexec, with the
    type given (:func:`allowed_type`), never guessed by the kernel, and
    the options that keep the image's superblock from choosing host
    behaviour (:func:`fstype.mount_options`)."""
    fstype = allowed_type(device, conf)
    options = ','.join([MOUNT_OPTIONS] + fstype_mod.mount_options(fstype))
    try:
        utils.execute('mount', '-t', fstype, '-o', options, device,
                      mountpoint, action='mounting %s' % device)
    except exception.CommandFailed as err:
        raise exception.HandlerFailed(
            reason='the %s filesystem on %s did not mount (%s)'
                   % (fstype, device, err)) from err
    journal.push('mount', path=mountpoint, device=device)
    LOG.info('Mounted %s (%s) at %s (%s)', device, fstype, mountpoint,
             options)


def mount_raw_file(path, partition, journal, real_path=None):
    """Loop-attach and mount raw file ``path``; return its GuestFiles.

    Every resource is on ``journal``; the caller unwinds it. ``real_path``
    as for :func:`attach_loop`.
    """
    if partition < 0:
        raise exception.HandlerFailed(
            reason='cannot inspect %s for its root partition'
                   % (real_path or path))
    mountpoint = journal.make_dir('root')
    device = attach_loop(path, journal, partition, real_path)
    mount_device(device, mountpoint, journal)
    files = host.HostRootFiles(mountpoint)
    # Its directory fd must be closed before the unmount, or umount fails.
    journal.callback(files.close)
    return files
