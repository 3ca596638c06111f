"""The type of a guest filesystem, from its superblock, read by our code.

Mounting without ``-t`` lets the kernel try every filesystem it has on a
tenant's bytes; each filesystem driver is attack surface. So the type is
read here from the superblock magic (no probing library), checked against
``[inject] allowed_filesystems``, and passed to ``mount -t``. Types we
recognise but never mount are named in the refusal, so the operator sees
what the image holds.
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


def detect(device):
    """The filesystem type on ``device`` (a block device or file).

    :returns: ``ext2``, ``ext3``, ``ext4``, ``xfs``, ``btrfs``, another
        name from :data:`_MAGICS`, or None when nothing is recognised.
    :raises OSError: the device cannot be read.
    """
    with open(device, 'rb') as f:
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


def mount_options(fstype):
    """Extra mount options a type needs to mount a guest's disk safely.

    XFS refuses a second filesystem with a UUID already mounted, and every
    overlay of one base image (every RHEL-family guest of one flavor)
    shares it: ``nouuid``. btrfs (Linux 6.7+) mounts such clones with a
    temporary fsid by itself.
    """
    return ['nouuid'] if fstype == 'xfs' else []
