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
from nova_ksm_inject.disk.files import host

LOG = logging.getLogger(__name__)

MOUNT_OPTIONS = 'nosuid,nodev,noexec'
SECTOR = 512


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
        'partx', '--show', '--noheadings', '--output',
        'NR,START,SECTORS', path, check_exit_code=False,
        action='reading the partition table of %s' % path)
    table = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            table[int(fields[0])] = (int(fields[1]) * SECTOR,
                                     int(fields[2]) * SECTOR)
    if partition not in table:
        found = ', '.join(str(n) for n in sorted(table)) or 'none'
        raise exception.HandlerFailed(
            reason='partition %d not found in %s (partitions: %s); set '
                   '--partition or [libvirt] inject_partition to one of '
                   'them, or 0 for a whole-disk filesystem'
                   % (partition, path, found))
    return table[partition]


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


def mount_device(device, mountpoint, journal):
    """Mount ``device`` at ``mountpoint`` with nosuid,nodev,noexec."""
    try:
        utils.execute('mount', '-o', MOUNT_OPTIONS, device, mountpoint,
                      action='mounting %s' % device)
    except exception.CommandFailed as err:
        raise exception.HandlerFailed(
            reason='no mountable filesystem on %s (%s); if the image has a '
                   'partition table, choose the partition with --partition '
                   'N or [libvirt] inject_partition' % (device, err)) from err
    journal.push('mount', path=mountpoint, device=device)
    LOG.info('Mounted %s at %s (%s)', device, mountpoint, MOUNT_OPTIONS)


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
