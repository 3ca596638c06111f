"""Safe image inspection: format, size and backing chain, without probing.

A qemu tool that guesses a format from the header can be steered by the
image's owner: a "raw" disk whose first sector is a qcow2 or VMDK header
makes qemu open whatever host file that header names (CVE-2010-3851,
CVE-2024-32498, CVE-2022-47951). So the header is read here, in Python, and
every ``qemu-img`` call gets ``-f FORMAT``. ``qemu-img info`` runs under CPU
and address-space limits (CVE-2015-5162) and never with ``--backing-chain``
(which would open the backing files); the chain is walked here instead, one
layer at a time, resolving names as qemu does and checking each one against
the trusted directories before anything opens it.
"""

import dataclasses
import json
import os
import shutil
import stat
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.conf import CONF

LOG = logging.getLogger(__name__)

#: The only formats inspected, mounted and accepted as backing files.
ACCEPTED_FORMATS = ('raw', 'qcow2')

# qemu probes the first 2 KiB (BLOCK_PROBE_BUF_SIZE); read a little more.
_HEADER_BYTES = 4096

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

_CVES = 'CVE-2010-3851, CVE-2024-32498'


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What :func:`inspect_image` established about an image.

    :ivar path: absolute real path; open this one, not the caller's name.
    :ivar format: ``'raw'`` or ``'qcow2'``; pass it to every tool.
    :ivar virtual_size: guest-visible size in bytes.
    :ivar backing_chain: ``(real path, format)`` pairs from the direct
        backing file down; ``()`` when there is none.
    """

    path: str
    format: str
    virtual_size: int
    backing_chain: tuple = ()

    @property
    def is_cow(self):
        """True when writes can go to a copy-on-write layer (qcow2)."""
        return self.format == 'qcow2'


def detect_format(path):
    """Format of ``path`` judged from its header, as qemu would probe it.

    :returns: ``'raw'``, ``'qcow2'`` or the name of a format that is
        refused (``'vmdk'``, ``'qcow'``, ``'luks'``...).
    :raises ImageNotFound: missing or not a regular file.
    """
    return _format_of(_read_header(_regular_file(path)))


def inspect_image(path, fmt=None, trusted_dirs=None):
    """Inspect ``path`` safely and return an :class:`ImageInfo`.

    :param fmt: the format the caller states (``'raw'``/``'qcow2'``), or
        None to detect it from the header. A stated format that the header
        contradicts is refused.
    :param trusted_dirs: directories backing files may live in; defaults
        to ``[inject] trusted_backing_dirs``.
    :raises ImageNotFound: missing or not a regular file.
    :raises ImageRefused: unsafe or unsupported, with the cause and the fix.
    :raises ToolMissing: qemu-img is not installed.
    """
    real = _regular_file(path)
    detected = _format_of(_read_header(real))
    _check_format(real, fmt, detected)
    data = _qemu_img_info(real, detected)
    chain = _walk_chain(real, data, _trusted(trusted_dirs))
    info = ImageInfo(real, detected, data['virtual-size'], chain)
    LOG.info('Inspected image %(path)s: format %(fmt)s, virtual size '
             '%(size)d bytes, backing chain of %(depth)d file(s)',
             {'path': real, 'fmt': detected, 'size': info.virtual_size,
              'depth': len(chain)})
    return info


def _refused(path, reason, *args):
    return exception.ImageRefused(path=path, reason=reason % args)


def _regular_file(path):
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError as err:
        raise exception.ImageNotFound(path=path) from err
    if not stat.S_ISREG(mode):
        raise exception.ImageNotFound(path=path)
    return real


def _read_header(path):
    try:
        with open(path, 'rb') as image:
            return image.read(_HEADER_BYTES)
    except OSError as err:
        raise _refused(path, 'cannot read its header (%s); check the file '
                       'permissions', err) from err


def _format_of(header):
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


def _check_format(path, fmt, detected):
    if fmt is not None and fmt not in ACCEPTED_FORMATS:
        raise _refused(path, 'format %s is not accepted (only %s); convert '
                       'the image on a trusted host with qemu-img convert '
                       '-f %s -O qcow2', fmt, ', '.join(ACCEPTED_FORMATS),
                       fmt)
    if fmt == 'raw' and detected != 'raw':
        raise _refused(path, 'stated raw, but its header is a %s image; a '
                       'raw disk that looks like another format makes qemu '
                       'open the files its header names (%s). If it really '
                       'is %s, state that or omit the format', detected,
                       _CVES, detected)
    if fmt == 'qcow2' and detected != 'qcow2':
        raise _refused(path, 'stated qcow2, but its header is %s; state the '
                       'real format or let it be detected', detected)
    if detected not in ACCEPTED_FORMATS:
        raise _refused(path, 'its header is a %s image, which is not '
                       'accepted (only %s); convert it on a trusted host '
                       'with qemu-img convert -f %s -O qcow2', detected,
                       ', '.join(ACCEPTED_FORMATS), detected)


def _qemu_img_info(path, fmt):
    # No -U (--force-share): an image a running qemu holds for writing must
    # fail here, as writing into it must be refused anyway.
    cmd = ('qemu-img', 'info', '--output=json', '-f', fmt, path)
    limits = utils.ResourceLimits(
        cpu_time=CONF.inject.qemu_img_cpu_time,
        address_space=CONF.inject.qemu_img_address_space)
    started = time.monotonic()
    try:
        out, _err = utils.execute(*cmd, action='inspecting image %s' % path,
                                  run_as_root=False, preexec_fn=limits)
    except exception.CommandFailed as err:
        raise _qemu_img_failed(path, fmt, err) from err
    LOG.debug('%(cmd)s took %(secs).3f s',
              {'cmd': ' '.join(cmd), 'secs': time.monotonic() - started})
    try:
        data = json.loads(out)
    except ValueError as err:
        raise _refused(path, 'qemu-img info -f %s printed no valid JSON '
                       '(%s)', fmt, err) from err
    if (not isinstance(data, dict) or data.get('format') != fmt
            or not isinstance(data.get('virtual-size'), int)
            or data['virtual-size'] < 0):
        raise _refused(path, 'qemu-img info -f %s did not describe a %s '
                       'image with a virtual size', fmt, fmt)
    return data


def _qemu_img_failed(path, fmt, err):
    if shutil.which('qemu-img') is None:
        return exception.ToolMissing(tool='qemu-img', package='qemu-utils',
                                     action='inspecting image %s' % path)
    code = err.kwargs.get('code')
    stderr = err.kwargs.get('stderr')
    limits = ('[inject] qemu_img_cpu_time=%s s / qemu_img_address_space=%s '
              'bytes' % (CONF.inject.qemu_img_cpu_time,
                         CONF.inject.qemu_img_address_space))
    if isinstance(code, int) and code < 0:
        return _refused(path, 'qemu-img info was killed by signal %d, most '
                        'likely for exceeding its limits (%s); a crafted '
                        'image can do that on purpose (CVE-2015-5162). If '
                        'the image is trusted, raise those options',
                        -code, limits)
    # qemu's lock failure ends "Is another process using the image ...?"
    if 'another process' in (stderr or '') or 'lock' in (stderr or ''):
        return _refused(path, 'it is in use by another process (%s); stop '
                        'the guest or process using it first', stderr)
    return _refused(path, 'qemu-img info -f %s failed (exit %s: %s); check '
                    'it is a valid %s image, readable, and that %s suffice',
                    fmt, code, stderr, fmt, limits)


def _trusted(dirs):
    dirs = CONF.inject.trusted_backing_dirs if dirs is None else dirs
    return tuple(os.path.realpath(d) for d in dirs if d)


def _walk_chain(top, data, trusted):
    """Check every layer from ``top`` down; return the backing chain.

    ``named_as`` is the path qemu would have opened the current layer by:
    qemu resolves a relative backing name against the directory of that
    name, not of its real path.
    """
    chain = []
    seen = {top}
    named_as = layer = top
    while True:
        _check_layer(top, layer, data)
        name = data.get('backing-filename')
        if not name:
            return tuple(chain)
        if len(chain) >= CONF.inject.max_backing_chain:
            raise _refused(top, 'its backing chain is longer than [inject] '
                           'max_backing_chain=%d; flatten it with qemu-img '
                           'convert -O qcow2', CONF.inject.max_backing_chain)
        fmt = _backing_format(top, layer, data)
        named_as = _resolve(top, layer, named_as, name)
        layer = _trusted_backing(top, named_as, trusted, seen)
        header_fmt = _format_of(_read_header(layer))
        if header_fmt != fmt:
            raise _refused(top, 'backing file %s is recorded as %s but its '
                           'header is %s (%s); fix the recorded format with '
                           'qemu-img rebase -u -F FORMAT', layer, fmt,
                           header_fmt, _CVES)
        seen.add(layer)
        chain.append((layer, fmt))
        data = _qemu_img_info(layer, fmt)


def _check_layer(top, layer, data):
    specific = (data.get('format-specific') or {}).get('data') or {}
    if specific.get('data-file'):
        raise _refused(top, 'layer %s has an external data file %s, which '
                       'could be any host file (CVE-2024-32498); convert it '
                       'to a self-contained image with qemu-img convert',
                       layer, specific['data-file'])


def _backing_format(top, layer, data):
    fmt = data.get('backing-filename-format')
    if not fmt:
        raise _refused(top, 'layer %s names backing file %s without a '
                       'backing format, so qemu would probe it; record it '
                       'with qemu-img rebase -u -F raw|qcow2 -b %s %s',
                       layer, data['backing-filename'],
                       data['backing-filename'], layer)
    if fmt not in ACCEPTED_FORMATS:
        raise _refused(top, 'layer %s has a %s backing file (only %s are '
                       'accepted); convert the chain with qemu-img convert',
                       layer, fmt, ', '.join(ACCEPTED_FORMATS))
    return fmt


def _resolve(top, layer, named_as, name):
    # "proto:..." and "json:{...}" (a ':' before any '/') are not files.
    if ':' in name.split('/', 1)[0]:
        raise _refused(top, 'layer %s names backing file %r, a qemu '
                       'protocol or json: pseudo-file, not a plain file; '
                       'rebase it onto a file with qemu-img rebase -u',
                       layer, name)
    # No normpath: "link/.." must be resolved by realpath as open() would.
    return os.path.join(os.path.dirname(named_as), name)


def _trusted_backing(top, named_as, trusted, seen):
    real = os.path.realpath(named_as)
    if not any(os.path.commonpath([real, d]) == d for d in trusted):
        raise _refused(top, 'backing file %s (resolving to %s) is outside '
                       'the trusted directories (%s); move the base image '
                       'into one of them or add its directory to [inject] '
                       'trusted_backing_dirs or --trusted-backing-dir',
                       named_as, real, ', '.join(trusted) or 'none')
    if real in seen:
        raise _refused(top, 'its backing chain loops back to %s', real)
    try:
        return _regular_file(real)
    except exception.ImageNotFound as err:
        raise _refused(top, 'backing file %s does not exist or is not a '
                       'regular file', named_as) from err
