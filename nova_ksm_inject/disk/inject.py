"""What gets written into a guest: ssh key, network config, metadata, admin
password and files.

Only the :class:`~nova_ksm_inject.disk.guestfiles.GuestFiles` interface is
used, so the same code serves host mounts and libguestfs. Every item is
prepared first (limits checked, guest files read, contents computed) and
only then written: a bad request, a missing shadow entry or a symlinked
target found while preparing leaves the image untouched.
"""

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import json
import os
import posixpath
import secrets
import string

import jinja2
from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF

LOG = logging.getLogger(__name__)

AUTHORIZED_KEYS = '/root/.ssh/authorized_keys'
KEY_COMMENT = b'# The following ssh key was injected by nova-ksm-inject\n'
NETWORK_FILE = '/etc/network/interfaces'
METADATA_FILE = '/meta.js'
SHADOW, PASSWD = '/etc/shadow', '/etc/passwd'
SELINUX_CONFIG, AUTORELABEL = '/etc/selinux/config', '/.autorelabel'
DEFAULT_TEMPLATE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'templates', 'interfaces.template')
# Optional interface keys; the rest must be given or the template fails.
_IFACE_DEFAULTS = {'broadcast': None, 'gateway': None, 'dns': (),
                   'address_v6': None, 'gateway_v6': None}
_SALT_CHARS = string.ascii_letters + string.digits + './'
# sizeof(struct crypt_data): ~32 KiB in libxcrypt, ~128 KiB in the old
# glibc libcrypt; a larger zeroed buffer fits both.
_CRYPT_DATA_SIZE = 256 * 1024


@dataclasses.dataclass(repr=False)
class InjectionRequest:
    """What to inject. ``files`` is a list of ``(guest_path, bytes)``."""

    key: str | None = None
    net: str | None = None
    metadata: dict | None = None
    admin_password: str | None = None
    files: list = dataclasses.field(default_factory=list)

    def describe(self):
        """Names of the requested items, never their values."""
        parts = [name for name in ('key', 'net', 'metadata',
                                   'admin_password') if getattr(self, name)]
        if self.files:
            count = len(self.files)
            parts.append('%d file%s' % (count, '' if count == 1 else 's'))
        return ', '.join(parts) or 'nothing'

    def is_empty(self):
        """True when nothing would be injected."""
        return not (self.key or self.net or self.metadata or
                    self.admin_password or self.files)

    def __repr__(self):
        # The generated repr would print the key and the password.
        return '<InjectionRequest %s>' % self.describe()


def _content(data):
    return data.encode('utf-8') if isinstance(data, str) else bytes(data)


def check_limits(request, conf=None):
    """Refuse a request over the file quotas, before anything is written.

    :raises InjectionLimit: too many files, a file too large, a path too
        long, a multi-line key or a password with a NUL byte.
    :raises GuestPathRefused: a file path that is not an absolute guest path.
    """
    limits = (conf or CONF).inject
    if len(request.files) > limits.max_injected_files:
        raise exception.InjectionLimit(reason=(
            '%d files requested, at most %d may be injected; raise [inject] '
            'max_injected_files or send fewer files'
            % (len(request.files), limits.max_injected_files)))
    for path, data in request.files:
        if not isinstance(path, str) or not path.startswith('/') or \
                '\0' in path:
            raise exception.GuestPathRefused(
                path=repr(path), reason='an injected file needs an absolute '
                                        'guest path without NUL bytes')
        if len(path) > limits.max_injected_file_path_length:
            raise exception.InjectionLimit(reason=(
                'injected file path %s... is longer than %d characters '
                '([inject] max_injected_file_path_length)'
                % (path[:64], limits.max_injected_file_path_length)))
        if len(_content(data)) > limits.max_injected_file_bytes:
            raise exception.InjectionLimit(reason=(
                'injected file %s has %d bytes, more than %d ([inject] '
                'max_injected_file_bytes)' % (path, len(_content(data)),
                                              limits.max_injected_file_bytes)))
    if request.key and any(c in request.key.strip() for c in '\r\n\0'):
        raise exception.InjectionLimit(reason=(
            'the ssh key spans several lines; give exactly one public key'))
    if request.admin_password and '\0' in request.admin_password:
        raise exception.InjectionLimit(
            reason='the admin password contains a NUL byte')


def _normalize_interface(ifc):
    ifc = dict(_IFACE_DEFAULTS, **ifc)
    if isinstance(ifc['dns'], str):
        ifc['dns'] = ifc['dns'].split()
    # A line break in a value could add an "up <command>" line that
    # ifupdown runs as root in the guest.
    for key, value in ifc.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and not v.isprintable() for v in values):
            raise exception.InjectionLimit(reason=(
                'network value %s=%r of interface %s has control characters'
                % (key, value, ifc.get('name'))))
    return ifc


def render_network(interfaces, template_path=None, conf=None):
    """Render the guest network configuration; return its text.

    ``template_path`` defaults to ``[DEFAULT] injected_network_template``,
    then the packaged Debian ``/etc/network/interfaces`` template. The
    template gets ``interfaces`` (dicts with ``name``, ``use_dhcp``,
    ``address``, ``netmask``, ``broadcast``, ``gateway``, ``dns``, and
    optionally ``address_v6``, ``netmask_v6``, ``gateway_v6``) and, as in
    nova, ``use_ipv6``.

    :raises ConfigError: missing or broken template, or a value it uses is
        missing (StrictUndefined: a typo fails instead of writing "").
    """
    path = (template_path or (conf or CONF).injected_network_template or
            DEFAULT_TEMPLATE)
    ifaces = [_normalize_interface(ifc) for ifc in interfaces]
    # autoescape off: the output is a plain-text config file read by
    # ifupdown, where HTML entities (&amp;) would be corrupt values.
    # trim_blocks as in nova, so operators' nova templates render the same.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.dirname(path) or '.'),
        undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
        keep_trailing_newline=True)
    try:
        template = env.get_template(os.path.basename(path))
        return template.render(interfaces=ifaces, use_ipv6=any(
            ifc['address_v6'] for ifc in ifaces))
    except (jinja2.TemplateError, OSError) as err:
        raise exception.ConfigError(reason=(
            'cannot render network template %s: %s; fix [DEFAULT] '
            'injected_network_template or the interface data'
            % (path, err or type(err).__name__))) from err


@functools.lru_cache(maxsize=1)
def _crypt_r():
    name = ctypes.util.find_library('crypt')
    if name is None:
        raise OSError('libcrypt not found; install the Debian package '
                      'libcrypt1')
    func = ctypes.CDLL(name).crypt_r
    func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    func.restype = ctypes.c_char_p
    return func


def sha512_crypt(password, salt=None):
    """Return the SHA-512 crypt(3) hash ``$6$<salt>$...`` of ``password``.

    The stdlib ``crypt`` module is deprecated (gone in 3.13): this calls
    the system libcrypt's ``crypt_r`` with a private buffer (thread-safe).
    """
    salt = salt or ''.join(secrets.choice(_SALT_CHARS) for _ in range(16))
    data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = _crypt_r()(password.encode('utf-8'),
                        ('$6$' + salt).encode('ascii'), data)
    if not result or not result.startswith(b'$6$'):
        raise ValueError('libcrypt did not produce a SHA-512 hash (got %r); '
                         'it may lack SHA-512 support' % (result or b'')[:3])
    return result.decode('ascii')


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


@contextlib.contextmanager
def _failure(what, image):
    try:
        yield
    except (OSError, ValueError, TypeError) as err:
        raise exception.InjectionFailed(what=what, image=image,
                                        reason=str(err)) from err


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


def _prepare_password(files, password, image):
    # Only root's password field changes; "last change" and the aging
    # fields stay as the image builder set them, as nova does.
    if not files.exists(SHADOW):
        raise exception.NoShadowEntry(reason='the guest has no /etc/shadow')
    new = _set_root_hash(files.read(SHADOW), sha512_crypt(password))
    passwd = files.read(PASSWD) if files.exists(PASSWD) else b''
    for line in passwd.splitlines():
        fields = line.split(b':')
        if fields[0] == b'root' and fields[1:2] != [b'x']:
            # /etc/passwd is left alone: a hash there overrides shadow.
            LOG.warning('root in /etc/passwd of image %s does not defer to '
                        '/etc/shadow; the injected password may be ignored',
                        image)
    return lambda: files.write(SHADOW, new)


def _plan(files, request, image):
    steps = []
    if request.key:
        with _failure('key', image):
            steps.append(('key', _prepare_key(files, request.key)))
    if request.net:
        steps.append(('net', _prepare_write(
            files, NETWORK_FILE, request.net.encode('utf-8'))))
    if request.metadata:
        with _failure('metadata', image):
            data = json.dumps(request.metadata).encode('utf-8')
        steps.append(('metadata', _prepare_write(files, METADATA_FILE, data)))
    if request.admin_password:
        with _failure('admin_password', image):
            steps.append(('admin_password', _prepare_password(
                files, request.admin_password, image)))
    for path, data in request.files:
        steps.append(('file %s' % path,
                      _prepare_write(files, path, _content(data))))
    return steps


def inject_data(files, request, image_desc='', conf=None):
    """Write ``request`` into the guest behind ``files``.

    On SELinux guests ``/.autorelabel`` is also created: files written
    from the host carry no (or the wrong) security context, and a full
    relabel at next boot is what SELinux tooling itself does after offline
    edits.

    :param files: a :class:`~nova_ksm_inject.disk.guestfiles.GuestFiles`.
    :returns: the names of what was written, in order.
    :raises InjectionLimit, GuestPathRefused, NoShadowEntry: before any
        write. :raises InjectionFailed: a write failed.
    """
    check_limits(request, conf)
    steps = _plan(files, request, image_desc)
    if steps and files.exists(SELINUX_CONFIG):
        steps.append(('SELinux autorelabel', _prepare_write(
            files, AUTORELABEL, b'')))
    injected = []
    for what, apply in steps:
        LOG.info('Injecting %(what)s into image %(image)s',
                 {'what': what, 'image': image_desc})
        with _failure(what, image_desc):
            apply()
        injected.append(what)
    return injected
