"""The type of a guest filesystem, from its superblock, read by our code.

Mounting without ``-t`` lets the kernel try every filesystem it has on a
tenant's bytes; each filesystem driver is attack surface. So the type is
read here from the superblock magic (no probing library), checked against
``[inject] allowed_filesystems``, and passed to ``mount -t``. Types we
recognise but never mount are named in the refusal, so the operator sees
what the image holds.

What a tenant's superblock could choose for the host, and what we do:

ext2/ext3/ext4 (``fs/ext4``, which mounts ext2 too unless the kernel has
the old ext2 driver, which honours ``s_errors`` as well) apply the
superblock's ``s_errors`` (``tune2fs -e``), ``s_default_mount_opts``
(``tune2fs -o``) and free-form ``s_mount_opts`` (``tune2fs -E
mount_opts=``) *before* the command line, so what :func:`mount_options`
passes wins:

* ``errors=panic`` would panic the compute node on the first corruption
  the tenant plants: always ``errors=remount-ro`` (``continue`` would
  keep writing to a corrupt filesystem).
* ``journal_dev=``/``journal_path=`` and ``s_journal_dev`` itself name the
  host block device opened read-write as an external journal, and the
  kernel lets the superblock's choice beat ours: such images are refused
  (:func:`external_journal`). ``journal_ioprio=`` also beats ours but
  only picks a best-effort level any unprivileged process may use.
* ``debug`` has no off switch; it logs a line per mount and orphan.
* ``dax``: loop, FUSE and nbd devices have no DAX, so ``dax=always``
  fails the mount and the chain moves on; ``dax=never`` is refused for
  ext2 and by kernels without FS_DAX, so it is not passed.
* The rest (``nobarrier``, ``data=``, ``commit=``, batch times,
  ``discard``, ``grpid``, ACLs...) only changes durability, speed or
  ownership inside the tenant's own filesystem while we hold it, and
  umount writes everything out.

XFS keeps no mount options in its superblock. Its error handling is the
host's (``/sys/fs/xfs/<dev>/error/``, sysctl ``fs.xfs.panic_mask``): a
corrupt XFS shuts down, not the host. External log and realtime devices
are named only by ``logdev=``/``rtdev=``, which we never pass.

btrfs keeps no mount options in its superblock either: ``fatal_errors=``
(default ``bug``; ``panic`` only if the host passes it) exists only on
the command line.
"""

import struct

# (offset, magic, type): the Linux root filesystems first.
_MAGICS = (
    (1080, b'\x53\xef', 'ext'),             # s_magic 0xEF53, little endian
    (0, b'XFSB', 'xfs'),
    (65600, b'_BHRfS_M', 'btrfs'),          # superblock at 64 KiB + 64
    (0, b'hsqs', 'squashfs'),
    (0, b'LUKS\xba\xbe', 'crypto_LUKS'),
    (512, b'LABELONE', 'LVM2_member'),
    (3, b'NTFS    ', 'ntfs'),
    (82, b'FAT32   ', 'vfat'),
    (54, b'FAT1', 'vfat'),
    (32769, b'CD001', 'iso9660'),
    (1030, b'\x44\xf4\xf2\xf5', 'f2fs'),
    (65588, b'ReIsEr', 'reiserfs'),
)
_READ = 65600 + 8

# ext superblock (at 1024): s_feature_compat at 0x5C, incompat at 0x60,
# ro_compat at 0x64.
_EXT_FEATURES = struct.Struct('<III')
_EXT_FEATURES_AT = 1024 + 0x5C
_HAS_JOURNAL = 0x4
# Features ext3 lacks: extents, 64bit, flex_bg, mmp, csum_seed, inline data
# (incompat); huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum
# (ro_compat).
_EXT4_INCOMPAT = 0x40 | 0x80 | 0x100 | 0x200 | 0x2000 | 0x8000
_EXT4_RO_COMPAT = 0x8 | 0x10 | 0x20 | 0x40 | 0x400
# s_journal_inum: 0 with has_journal means the journal is on the device
# numbered s_journal_dev.
_EXT_JOURNAL_INUM = struct.Struct('<I')
_EXT_JOURNAL_INUM_AT = 1024 + 0xE0
_EXT_TYPES = ('ext2', 'ext3', 'ext4')


def detect(device, offset=0):
    """The filesystem type on ``device`` (a block device or file), or on
    the partition that starts ``offset`` bytes into it.

    :returns: ``ext2``, ``ext3``, ``ext4``, ``xfs``, ``btrfs``, another
        name from :data:`_MAGICS`, or None when nothing is recognised.
    :raises OSError: the device cannot be read.
    """
    with open(device, 'rb') as f:
        f.seek(offset)
        head = f.read(_READ)
    for offset, magic, name in _MAGICS:
        if head[offset:offset + len(magic)] == magic:
            return _ext_generation(head) if name == 'ext' else name
    return None


def _ext_generation(head):
    compat, incompat, ro_compat = _EXT_FEATURES.unpack_from(
        head, _EXT_FEATURES_AT)
    if incompat & _EXT4_INCOMPAT or ro_compat & _EXT4_RO_COMPAT:
        return 'ext4'
    return 'ext3' if compat & _HAS_JOURNAL else 'ext2'


def external_journal(device, offset=0):
    """True when the ext3/ext4 filesystem on ``device`` (at ``offset``)
    keeps its journal on another block device, which its superblock names
    (a host device the kernel would open read-write).

    :raises OSError: the device cannot be read.
    """
    with open(device, 'rb') as f:
        f.seek(offset)
        head = f.read(_EXT_JOURNAL_INUM_AT + _EXT_JOURNAL_INUM.size)
    compat, _incompat, _ro_compat = _EXT_FEATURES.unpack_from(
        head, _EXT_FEATURES_AT)
    inum, = _EXT_JOURNAL_INUM.unpack_from(head, _EXT_JOURNAL_INUM_AT)
    return bool(compat & _HAS_JOURNAL) and inum == 0


def mount_options(fstype):
    """Extra mount options a type needs to mount a guest's disk safely.

    ext2/3/4: ``errors=remount-ro``, whatever the superblock says (see the
    module docstring). XFS refuses a second filesystem with a UUID already
    mounted, and every overlay of one base image (every RHEL-family guest
    of one flavor) shares it: ``nouuid``. btrfs (Linux 6.7+) mounts such
    clones with a temporary fsid by itself.
    """
    if fstype in _EXT_TYPES:
        return ['errors=remount-ro']
    return ['nouuid'] if fstype == 'xfs' else []
