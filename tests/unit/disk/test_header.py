"""Image headers read by our own code: the format qemu would probe from
the magic bytes, and the qcow2 fields that make qemu open other host
files."""

import os
import struct

import pytest

from nova_ksm_inject.disk import header

DIRTY, CORRUPT = 1 << 0, 1 << 1


def qcow2_header(version=3, backing_offset=0, backing_size=0,
                 incompatible=0, length=104):
    """A qcow2 header as docs/interop/qcow2.txt lays it out."""
    head = struct.pack('>4sIQI', b'QFI\xfb', version, backing_offset,
                       backing_size).ljust(72, b'\0')
    if version >= 3:
        head += struct.pack('>Q', incompatible)
    return head.ljust(length, b'\0')


def test_plain_qcow2_opens_no_other_file():
    assert header.qcow2(qcow2_header()) == header.Qcow2Header(
        version=3, has_backing_file=False, external_data_file=False)


def test_backing_file_needs_offset_and_size():
    assert header.qcow2(qcow2_header(backing_offset=512,
                                     backing_size=9)).has_backing_file
    assert not header.qcow2(qcow2_header(backing_offset=512)).has_backing_file
    assert not header.qcow2(qcow2_header(backing_size=9)).has_backing_file


def test_v2_backing_file():
    fields = header.qcow2(qcow2_header(version=2, backing_offset=512,
                                       backing_size=9, length=72))
    assert (fields.version, fields.has_backing_file) == (2, True)


@pytest.mark.parametrize('bits, expected', [
    (header.QCOW2_EXTERNAL_DATA_FILE, True),
    (DIRTY | CORRUPT | header.QCOW2_EXTERNAL_DATA_FILE, True),
    (DIRTY | CORRUPT, False),
    (0, False),
])
def test_external_data_file_bit(bits, expected):
    assert header.QCOW2_EXTERNAL_DATA_FILE == 4  # incompatible bit 2
    fields = header.qcow2(qcow2_header(incompatible=bits))
    assert fields.external_data_file is expected


def test_v2_has_no_feature_bits():
    # In a version 2 image, offset 72 already belongs to header extensions.
    head = qcow2_header(version=2, length=72) + struct.pack(
        '>Q', header.QCOW2_EXTERNAL_DATA_FILE)
    assert header.qcow2(head).external_data_file is False


@pytest.mark.parametrize('length', [0, 8, 71])
def test_truncated_header_is_an_error(length):
    with pytest.raises(ValueError, match='at least 72 bytes'):
        header.qcow2(qcow2_header()[:length])


def test_read_by_path_and_by_descriptor(tmp_path):
    path = tmp_path / 'disk'
    path.write_bytes(b'QFI\xfb' + b'x' * 10000)
    by_path = header.read(path=str(path))
    assert len(by_path) == header.HEADER_BYTES and by_path[:4] == b'QFI\xfb'
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5000, os.SEEK_SET)  # read from the start regardless
        assert header.read(fd=fd) == by_path
    finally:
        os.close(fd)


# --- format detection -------------------------------------------------

@pytest.mark.parametrize('head, expected', [
    (b'\0' * 512, 'raw'),
    (b'', 'raw'),
    (b'\0' * 510 + b'\x55\xaa', 'raw'),         # an MBR disk is raw
    (b'QFI\xfb\0\0\0\2', 'qcow2'),
    (b'QFI\xfb\0\0\0\3', 'qcow2'),
    (b'QFI\xfb\0\0\0\1', 'qcow'),
    (b'QED\0', 'qed'),
    (b'KDMV\1\0\0\0', 'vmdk'),
    (b'COWD\1\0\0\0', 'vmdk'),
    (b'# Disk DescriptorFile\nversion=1\n', 'vmdk'),
    (b'# comment\n  \nversion=2\r\nCID=fffffffe\n', 'vmdk'),
    (b'version=3\n', 'vmdk'),
    (b'version=4\n', 'raw'),
    (b'hello\nversion=1\n', 'raw'),
    (b'vhdxfile', 'vhdx'),
    (b'conectix', 'vpc'),
    (b'<<< Oracle VM VirtualBox Disk Image >>>\n'.ljust(64, b'\0')
     + b'\x7f\x10\xda\xbe', 'vdi'),
    (b'LUKS\xba\xbe\0\1', 'luks'),
    (b'WithoutFreeSpace', 'parallels'),
    (b'WithouFreSpacExt', 'parallels'),
    (b'Bochs Virtual HD Image\0', 'bochs'),
    (b'#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$IMAGE\n', 'cloop'),
])
def test_format_of(tmp_path, head, expected):
    path = tmp_path / 'disk'
    path.write_bytes(head)
    assert header.format_of(header.read(path=str(path))) == expected
