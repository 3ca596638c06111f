"""Filesystem type from the superblock: synthetic superblocks in files."""

import struct

import pytest

from nova_ksm_inject.disk import fstype

SIZE = 70 * 1024


def image(tmp_path, *writes):
    data = bytearray(SIZE)
    for offset, blob in writes:
        data[offset:offset + len(blob)] = blob
    path = tmp_path / 'fs.img'
    path.write_bytes(bytes(data))
    return str(path)


def ext(tmp_path, compat=0, incompat=0, ro_compat=0):
    return image(tmp_path, (1080, b'\x53\xef'),
                 (1024 + 0x5C, struct.pack('<III', compat, incompat,
                                           ro_compat)))


@pytest.mark.parametrize('features,expected', [
    ({}, 'ext2'),
    ({'compat': 0x4}, 'ext3'),
    ({'compat': 0x4, 'incompat': 0x40}, 'ext4'),      # extents
    ({'compat': 0x4, 'ro_compat': 0x400}, 'ext4'),    # metadata_csum
    ({'incompat': 0x200}, 'ext4'),                    # flex_bg
])
def test_ext_generations(tmp_path, features, expected):
    assert fstype.detect(ext(tmp_path, **features)) == expected


@pytest.mark.parametrize('writes,expected', [
    ([(0, b'XFSB')], 'xfs'),
    ([(65600, b'_BHRfS_M')], 'btrfs'),
    ([(0, b'hsqs')], 'squashfs'),
    ([(3, b'NTFS    ')], 'ntfs'),
    ([(32769, b'CD001')], 'iso9660'),
    ([(512, b'LABELONE')], 'LVM2_member'),
    ([], None),
])
def test_other_types(tmp_path, writes, expected):
    assert fstype.detect(image(tmp_path, *writes)) == expected


@pytest.mark.parametrize('found,options', [
    ('ext2', ['errors=remount-ro']),
    ('ext3', ['errors=remount-ro']),
    ('ext4', ['errors=remount-ro']),
    ('xfs', ['nouuid']),
    ('btrfs', []),
    ('squashfs', [])])
def test_mount_options_override_the_superblock(found, options):
    # ext's s_errors/s_mount_opts would otherwise choose errors=panic;
    # XFS and btrfs keep no mount options in their superblocks.
    assert fstype.mount_options(found) == options


def journal(tmp_path, compat, inum):
    return image(tmp_path, (1080, b'\x53\xef'),
                 (1024 + 0x5C, struct.pack('<I', compat)),
                 (1024 + 0xE0, struct.pack('<I', inum)))


@pytest.mark.parametrize('compat,inum,expected', [
    (0x4, 0, True),       # has_journal, no journal inode: external
    (0x4, 8, False),      # the usual journal in inode 8
    (0, 0, False)])       # ext2: no journal at all
def test_external_journal(tmp_path, compat, inum, expected):
    assert fstype.external_journal(journal(tmp_path, compat, inum)) is \
        expected
