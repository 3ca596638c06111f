"""Image headers read by our own code, never by a probing qemu tool.

A qemu tool that guesses a format from the header can be steered by the
image's owner: a "raw" disk whose first sector is a qcow2 or VMDK header
makes qemu open whatever host file that header names (CVE-2010-3851,
CVE-2024-32498, CVE-2022-47951). So the format, and the qcow2 fields that
make qemu open other files, are read here before any tool sees the image.
"""

import dataclasses
import os
import struct

# qemu probes the first 2 KiB (BLOCK_PROBE_BUF_SIZE); read a little more.
HEADER_BYTES = 4096

# (offset, magic, format), as qemu's block drivers recognise them.
_MAGICS = (
    (0, b'QFI\xfb', 'qcow2'),   # qcow (v1) told apart by version, below
    (0, b'QED\x00', 'qed'),
    (0, b'KDMV', 'vmdk'),       # sparse extent
    (0, b'COWD', 'vmdk'),       # VMware 3 / ESX cow extent
    (0, b'# Disk DescriptorFile', 'vmdk'),
    (0, b'vhdxfile', 'vhdx'),
    (0, b'conectix', 'vpc'),
    (64, b'\x7f\x10\xda\xbe', 'vdi'),
    (0, b'LUKS\xba\xbe', 'luks'),
    (0, b'WithoutFreeSpace', 'parallels'),
    (0, b'WithouFreSpacExt', 'parallels'),
    (0, b'Bochs Virtual HD Image', 'bochs'),
    (0, b'#!/bin/sh\n#V2.0 Format\n', 'cloop'),
)
_VMDK_VERSIONS = (b'version=1', b'version=2', b'version=3')

# qcow2 header (docs/interop/qcow2.txt): version at 4, backing file offset
# and size at 8 and 16; version 3 adds incompatible features at 72.
_QCOW2_BASE = struct.Struct('>4sIQI')
_QCOW2_V3_FEATURES = struct.Struct('>Q')
_QCOW2_V3_OFFSET = _QCOW2_V2_SIZE = 72
#: Incompatible feature bit 2: the guest data lives in an external file.
QCOW2_EXTERNAL_DATA_FILE = 1 << 2


@dataclasses.dataclass(frozen=True)
class Qcow2Header:
    """The qcow2 fields that make qemu open files other than the image."""

    version: int
    has_backing_file: bool
    external_data_file: bool


def read(path=None, fd=None):
    """The first :data:`HEADER_BYTES` of an image, by path or open fd."""
    if fd is not None:
        return os.pread(fd, HEADER_BYTES, 0)
    with open(path, 'rb') as image:
        return image.read(HEADER_BYTES)


def format_of(header):
    """Format of an image judged from ``header``, as qemu would probe it.

    :returns: ``'raw'``, ``'qcow2'`` or the name of another format.
    """
    for offset, magic, name in _MAGICS:
        if header[offset:offset + len(magic)] == magic:
            if name == 'qcow2' and header[4:8] == b'\0\0\0\1':
                return 'qcow'
            return name
    if _is_vmdk_descriptor(header):
        return 'vmdk'
    return 'raw'


def _is_vmdk_descriptor(header):
    # qemu's vmdk probe: after comment and blank lines, "version=N" starts
    # a text descriptor (whose extents can name any host file).
    for line in header.split(b'\n')[:-1]:
        line = line.rstrip(b'\r')
        if line.startswith(b'#') or not line.strip(b' '):
            continue
        return line in _VMDK_VERSIONS
    return False


def qcow2(header):
    """Parse the qcow2 fields of ``header`` (a qcow2 image's first bytes).

    :raises ValueError: too short to be a qcow2 header.
    """
    if len(header) < _QCOW2_V2_SIZE:
        raise ValueError('a qcow2 header is at least %d bytes, got %d'
                         % (_QCOW2_V2_SIZE, len(header)))
    _magic, version, backing_offset, backing_size = \
        _QCOW2_BASE.unpack_from(header)
    incompatible = 0
    if version >= 3 and len(header) >= _QCOW2_V3_OFFSET + 8:
        incompatible, = _QCOW2_V3_FEATURES.unpack_from(header,
                                                       _QCOW2_V3_OFFSET)
    return Qcow2Header(
        version=version,
        has_backing_file=bool(backing_offset and backing_size),
        external_data_file=bool(incompatible & QCOW2_EXTERNAL_DATA_FILE))
