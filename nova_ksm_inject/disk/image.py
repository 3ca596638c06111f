"""Safe image inspection: format, size and backing chain, without probing.

The header is read by our own code (``header.py``) and every ``qemu-img``
call gets ``-f FORMAT``. ``qemu-img info`` runs under CPU
and address-space limits (CVE-2015-5162) and never with ``--backing-chain``
(which would open the backing files); the chain is walked here instead, one
layer at a time, resolving names as qemu does and checking each one against
the trusted directories before anything opens it.
"""

import dataclasses
import os
import stat

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import header
from nova_ksm_inject.disk import imagefile
from nova_ksm_inject.disk import qemuimg

LOG = logging.getLogger(__name__)

#: The only formats inspected, mounted and accepted as backing files.
ACCEPTED_FORMATS = ('raw', 'qcow2')

_CVES = 'CVE-2010-3851, CVE-2024-32498'


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What :func:`inspect_image` established about an image.

    :ivar path: absolute real path, for records and messages.
    :ivar format: ``'raw'`` or ``'qcow2'``; pass it to every tool.
    :ivar virtual_size: guest-visible size in bytes.
    :ivar backing_chain: ``(real path, format)`` pairs from the direct
        backing file down; ``()`` when there is none.
    :ivar source: what tools open for this image: ``/proc/<pid>/fd/<n>``
        of the descriptor inspection holds (see ``imagefile.py``), or
        None when inspected without a holder (then ``path``).
    :ivar backing_sources: the same for each backing layer.
    """

    path: str
    format: str
    virtual_size: int
    backing_chain: tuple = ()
    source: str = None
    backing_sources: tuple = ()

    @property
    def tool_path(self):
        """The path to give tools that open the image itself."""
        return self.source or self.path

    def layer_paths(self):
        """``(tool path, format)`` of each backing layer, top down."""
        sources = self.backing_sources or [p for p, _f in self.backing_chain]
        return [(src, fmt) for src, (_p, fmt) in
                zip(sources, self.backing_chain, strict=True)]

    def to_dict(self):
        """Plain data for results crossing the privsep boundary."""
        return {'path': self.path, 'format': self.format,
                'virtual_size': self.virtual_size,
                'backing_chain': [list(layer) for layer in
                                  self.backing_chain]}

    @classmethod
    def from_dict(cls, data):
        return cls(data['path'], data['format'], data['virtual_size'],
                   tuple(tuple(layer) for layer in data['backing_chain']))


class _Unheld:
    """A file inspected by path only (no holder): tools get the path."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.source = None


def inspect_image(path, fmt=None, trusted_dirs=None, holder=None,
                  within=None):
    """Inspect ``path`` safely and return an :class:`ImageInfo`.

    :param fmt: the format the caller states (``'raw'``/``'qcow2'``), or
        None to detect it from the header. A stated format that the header
        contradicts is refused.
    :param trusted_dirs: directories backing files may live in; defaults
        to ``[inject] trusted_backing_dirs``.
    :param holder: keeps every layer open until it unwinds (a journal or
        an ExitStack), so tools open the inspected inodes themselves
        (``ImageInfo.source``); None inspects by path only.
    :param within: with a holder, the directories the image must lie in,
        reached without symlinks below them (the privileged side's rule);
        None follows symlinks (a root caller's own file).
    :raises ImageNotFound: missing or not a regular file.
    :raises ImageRefused: unsafe or unsupported, with the cause and the fix.
    :raises ToolMissing: qemu-img is not installed.
    """
    top = _open(path, holder, within)
    head = _read_header(top)
    detected = header.format_of(head)
    _check_format(top.path, fmt, detected)
    if detected == 'qcow2':
        _check_qcow2_header(top.path, fmt, head)
    data = qemuimg.info(top.path, top.source, detected)
    # A confined caller's trusted directories were resolved, symlinks
    # checked, by disk/job.py: resolving them again here could follow a
    # symlink swapped in since.
    trusted = (_trusted(trusted_dirs) if within is None
               else tuple(trusted_dirs or ()))
    layers = _walk_chain(top, data, trusted, holder)
    info = ImageInfo(top.path, detected, data['virtual-size'],
                     tuple((layer.path, f) for layer, f in layers),
                     top.source,
                     tuple(layer.source for layer, _f in layers)
                     if holder is not None else ())
    LOG.info('Inspected image %(path)s: format %(fmt)s, virtual size '
             '%(size)d bytes, backing chain of %(depth)d file(s)',
             {'path': top.path, 'fmt': detected, 'size': info.virtual_size,
              'depth': len(layers)})
    return info


def _refused(path, reason, *args):
    return exception.ImageRefused(path=path, reason=reason % args)


def _open(path, holder, within=None):
    if holder is None:
        return _Unheld(_regular_file(path))
    return imagefile.open_regular(path, holder, within=within)


def _regular_file(path):
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError as err:
        raise exception.ImageNotFound(path=path) from err
    if not stat.S_ISREG(mode):
        raise exception.ImageNotFound(path=path)
    return real


def _read_header(layer):
    try:
        return header.read(path=layer.path, fd=layer.fd)
    except OSError as err:
        raise _refused(layer.path, 'cannot read its header (%s); check the '
                       'file permissions', err) from err


def _check_qcow2_header(path, fmt, head):
    try:
        fields = header.qcow2(head)
    except ValueError as err:
        raise _refused(path, 'its qcow2 header is truncated (%s)', err) \
            from err
    if fields.external_data_file:
        raise _refused(path, 'its qcow2 header sets the external data file '
                       'feature: the guest data would be read from and '
                       'written to another host file (%s); convert it to '
                       'a self-contained image with qemu-img convert',
                       _CVES)
    if fields.has_backing_file and fmt != 'qcow2':
        raise _refused(path, 'its header says qcow2 with a backing file, '
                       'and no format was stated: a raw disk can be '
                       'written to look like that and pull another '
                       "image's clusters into itself (%s). If it is a "
                       'qcow2 overlay, state --format qcow2', _CVES)


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


def _trusted(dirs):
    dirs = CONF.inject.trusted_backing_dirs if dirs is None else dirs
    return tuple(os.path.realpath(d) for d in dirs if d)


def _walk_chain(top, data, trusted, holder):
    """Check every layer from ``top`` down; return ``[(layer, format)]``
    for the backing chain, each layer opened like ``top``.

    ``named_as`` is the path qemu would have opened the current layer by:
    qemu resolves a relative backing name against the directory of that
    name, not of its real path.
    """
    chain = []
    seen = {top.path}
    named_as, layer = top.path, top
    while True:
        _check_layer(top.path, layer.path, data)
        name = data.get('backing-filename')
        if not name:
            return chain
        if len(chain) >= CONF.inject.max_backing_chain:
            raise _refused(top.path, 'its backing chain is longer than '
                           '[inject] max_backing_chain=%d; flatten it with '
                           'qemu-img convert -O qcow2',
                           CONF.inject.max_backing_chain)
        fmt = _backing_format(top.path, layer.path, data)
        named_as = _resolve(top.path, layer.path, named_as, name)
        real = _trusted_backing(top.path, named_as, trusted, seen)
        layer = _open(real, holder)
        header_fmt = header.format_of(_read_header(layer))
        if header_fmt != fmt:
            raise _refused(top.path, 'backing file %s is recorded as %s but '
                           'its header is %s (%s); fix the recorded format '
                           'with qemu-img rebase -u -F FORMAT', real, fmt,
                           header_fmt, _CVES)
        seen.add(real)
        chain.append((layer, fmt))
        data = qemuimg.info(layer.path, layer.source, fmt)


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
