"""What gets written into a guest: ssh key, network config, metadata, admin
password and files, with a result per item.

Only the :class:`~nova_ksm_inject.disk.guestfiles.GuestFiles` interface is
used, so the same code serves host mounts and libguestfs. Every item is
prepared first (limits checked, guest files read, contents computed) and
only then written. A mandatory item that fails while preparing fails the
whole injection with the image untouched; a best-effort one is skipped
with a warning, and the others are still written, all in one mount.
"""

import dataclasses
import json
import posixpath

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.disk import password
from nova_ksm_inject.disk import request as disk_request

# Re-exported: the request type is part of this module's interface.
from nova_ksm_inject.disk.request import InjectionRequest  # noqa: F401

LOG = logging.getLogger(__name__)

AUTHORIZED_KEYS = '/root/.ssh/authorized_keys'
KEY_COMMENT = b'# The following ssh key was injected by nova-ksm-inject\n'
NETWORK_FILE = '/etc/network/interfaces'
METADATA_FILE = '/meta.js'
SHADOW, PASSWD = '/etc/shadow', '/etc/passwd'
SELINUX_CONFIG, AUTORELABEL = '/etc/selinux/config', '/.autorelabel'

WRITTEN, FAILED = 'written', 'failed'
#: Failures of one item (anything else means the mount itself broke).
ITEM_ERRORS = (exception.InjectionFailed, exception.NoShadowEntry,
               exception.GuestPathRefused, exception.InjectionLimit,
               OSError, ValueError, TypeError)


@dataclasses.dataclass
class ItemResult:
    """What happened to one item: ``written`` or ``failed`` with a reason.

    :ivar item: ``key``, ``net``, ``metadata``, ``admin_password``,
        ``file <guest path>`` or ``SELinux autorelabel``.
    :ivar group: the request item it belongs to (``files`` for a file).
    """

    item: str
    group: str
    status: str
    reason: str = None

    def to_dict(self):
        return dataclasses.asdict(self)


def _set_root_hash(shadow, hashed):
    """Return ``shadow`` with root's password field set to ``hashed``."""
    lines = shadow.split(b'\n')
    for index, line in enumerate(lines):
        fields = line.split(b':')
        if fields[0] == b'root' and len(fields) > 1:
            fields[1] = hashed.encode('ascii')
            lines[index] = b':'.join(fields)
            return b'\n'.join(lines)
    raise exception.NoShadowEntry(
        reason='/etc/shadow of the guest has no root entry')


def _prepare_key(files, key):
    line = key.strip().encode('utf-8')
    existing = files.read(AUTHORIZED_KEYS) if files.exists(
        AUTHORIZED_KEYS) else b''
    blob = line.split()[1:2] or [line]
    present = any(blob[0] in old.split() for old in existing.splitlines())
    extra = b'' if present else KEY_COMMENT + line + b'\n'
    if extra and existing and not existing.endswith(b'\n'):
        extra = b'\n' + extra

    def apply():
        files.makedirs('/root/.ssh', 0o700)
        # First, even with nothing to add: append refuses a symlinked key
        # file before any mode changes, and chown/chmod below then never
        # land on another guest file.
        files.write(AUTHORIZED_KEYS, extra, mode=0o600, append=True)
        for path, mode in (('/root/.ssh', 0o700), (AUTHORIZED_KEYS, 0o600)):
            files.chown(path, 0, 0)
            files.chmod(path, mode)
    return apply


def _prepare_write(files, path, data, mode=0o644):
    def apply():
        files.makedirs(posixpath.dirname(path), 0o755)
        files.write(path, data, mode=mode)
    return apply


def _prepare_password(files, secret, image):
    # Only root's password field changes; "last change" and the aging
    # fields stay as the image builder set them, as nova does.
    if not files.exists(SHADOW):
        raise exception.NoShadowEntry(reason='the guest has no /etc/shadow')
    new = _set_root_hash(files.read(SHADOW), password.sha512_crypt(secret))
    passwd = files.read(PASSWD) if files.exists(PASSWD) else b''
    for line in passwd.splitlines():
        fields = line.split(b':')
        if fields[0] == b'root' and fields[1:2] != [b'x']:
            # /etc/passwd is left alone: a hash there overrides shadow.
            LOG.warning('root in /etc/passwd of image %s does not defer to '
                        '/etc/shadow; the injected password may be ignored',
                        image)
    return lambda: files.write(SHADOW, new)


def _preparers(request):
    """``(item, group, prepare(files, image))`` in write order."""
    def write(path, data):
        return lambda files, _image: _prepare_write(files, path, data)

    if request.key:
        yield 'key', 'key', lambda files, _image: _prepare_key(
            files, request.key)
    if request.net:
        yield 'net', 'net', write(NETWORK_FILE, request.net.encode('utf-8'))
    if request.metadata:
        yield 'metadata', 'metadata', lambda files, _image: _prepare_write(
            files, METADATA_FILE, json.dumps(request.metadata).encode())
    if request.admin_password:
        yield 'admin_password', 'admin_password', \
            lambda files, image: _prepare_password(
                files, request.admin_password, image)
    for path, data in request.files:
        yield 'file %s' % path, 'files', write(
            path, disk_request.as_bytes(data))


def _as_item_error(item, image, err):
    if isinstance(err, exception.NovaKsmInjectError):
        return err
    return exception.InjectionFailed(what=item, image=image,
                                     reason=str(err) or type(err).__name__)


class _Outcome:
    """Collects per-item results, raising for mandatory items."""

    def __init__(self, request, image):
        self.request = request
        self.image = image
        self.results = []

    def failed(self, item, group, err):
        err = _as_item_error(item, self.image, err)
        if group in self.request.mandatory:
            raise err
        # The caller decides how loud a skipped best-effort item is (the
        # driver warns in nova's words).
        LOG.info('Skipping best-effort item %(item)s for image %(image)s: '
                 '%(err)s', {'item': item, 'image': self.image, 'err': err})
        self.results.append(ItemResult(item, group, FAILED, str(err)))

    def written(self, item, group):
        self.results.append(ItemResult(item, group, WRITTEN))


def _plan(files, request, outcome, conf):
    steps = []
    limit_errors = {item: disk_request.item_limit_error(request, item, conf)
                    for item in request.requested()}
    for item, group, prepare in _preparers(request):
        err = limit_errors.get(group)
        if err is None:
            try:
                steps.append((item, group, prepare(files, outcome.image)))
                continue
            except ITEM_ERRORS as error:
                err = error
        outcome.failed(item, group, err)
    return steps


def inject_data(files, request, image_desc='', conf=None):
    """Write ``request`` into the guest behind ``files``; one result per
    item (:class:`ItemResult`), in write order.

    On SELinux guests ``/.autorelabel`` is also created (best-effort):
    files written from the host carry no (or the wrong) security context,
    and a full relabel at next boot is what SELinux tooling itself does
    after offline edits.

    :param files: a :class:`~nova_ksm_inject.disk.guestfiles.GuestFiles`.
    :raises InjectionLimit, GuestPathRefused, NoShadowEntry,
        InjectionFailed: a mandatory item failed (``request.mandatory``);
        when it failed while preparing, nothing was written.
    """
    outcome = _Outcome(request, image_desc)
    steps = _plan(files, request, outcome, conf)
    if steps and files.exists(SELINUX_CONFIG):
        steps.append(('SELinux autorelabel', 'selinux',
                      _prepare_write(files, AUTORELABEL, b'')))
    for item, group, apply in steps:
        LOG.info('Injecting %(what)s into image %(image)s',
                 {'what': item, 'image': image_desc})
        try:
            apply()
        except ITEM_ERRORS as err:
            outcome.failed(item, group, err)
            continue
        outcome.written(item, group)
    # Items skipped while preparing were recorded first: restore the order.
    order = [item for item, _group, _prepare in _preparers(request)]
    return sorted(outcome.results, key=lambda r: order.index(r.item)
                  if r.item in order else len(order))
