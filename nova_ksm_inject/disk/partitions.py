"""A raw disk's partition table, as ``partx`` reads it in user space.

Shared by the host-kernel mounts (``disk/mount.py``: an offset loop) and
``fuse2fs`` (``-o offset=``, partx run in its sandbox): neither needs the
kernel's partition parsers or device-mapper, and nothing is left mapped.
"""

from nova_ksm_inject import exception

SECTOR = 512
#: partx's arguments before the disk: number, first sector, sectors.
COMMAND = ('partx', '--show', '--noheadings', '--output', 'NR,START,SECTORS')


def table(out):
    """``{number: (offset, size)}`` in bytes from :data:`COMMAND`'s output;
    lines that are not three numbers are skipped."""
    found = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            found[int(fields[0])] = (int(fields[1]) * SECTOR,
                                     int(fields[2]) * SECTOR)
    return found


def extent(found, partition, name):
    """``(offset, size)`` of ``partition`` in ``found`` (:func:`table`).

    :raises HandlerFailed: no such partition, naming those there are.
    """
    if partition not in found:
        raise exception.HandlerFailed(
            reason='partition %d not found in %s (partitions: %s); set '
                   '--partition or [libvirt] inject_partition to one of '
                   'them, or 0 for a whole-disk filesystem'
                   % (partition, name,
                      ', '.join(str(n) for n in sorted(found)) or 'none'))
    return found[partition]
