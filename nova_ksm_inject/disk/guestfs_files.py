"""The guest inside a libguestfs appliance: mounting it there
(:func:`mount_guest`, by partition or by inspection) and
:class:`GuestfsFiles`, the GuestFiles of the ``guestfs`` handler.

The guest filesystem is mounted inside the libguestfs appliance, never on
the host; the appliance daemon resolves every path after ``chroot`` into
the guest root, so ``..`` and symlinks (absolute or relative) stay inside
the guest, exactly like openat2(RESOLVE_IN_ROOT) in
:class:`~nova_ksm_inject.disk.guestpath.HostRootFiles`. The same rules are
kept on top of that, so injection behaves the same whichever handler ran:
paths must be absolute strings without NUL within the length limit; a
final-component symlink is refused for ``write``; reads, ``stat``,
``chmod`` and ``chown`` follow symlinks; a replaced file keeps its mode and
owner and is swapped in by ``rename``.

libguestfs reports failures as RuntimeError with a message; they become
OSError (FileNotFoundError for a missing path) so injection reports them
as for any other handler.
"""

import errno
import posixpath
import secrets
import stat

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import guestfiles
from nova_ksm_inject.disk import guestpath
from nova_ksm_inject.disk.guestfiles import GuestFiles
from nova_ksm_inject.disk.handlers import base

LOG = logging.getLogger(__name__)


def _refused(path, reason):
    return exception.GuestPathRefused(path=path, reason=reason)


def _os_error(err, path):
    text = str(err)
    code = errno.ENOENT if 'No such file or directory' in text else errno.EIO
    return OSError(code, text, path)


class GuestfsFiles(GuestFiles):
    """:class:`GuestFiles` on a launched, mounted libguestfs handle.

    :param handle: a ``guestfs.GuestFS`` with the guest root mounted at
        ``/``; its lifetime belongs to the handler.
    """

    def __init__(self, handle, conf=None):
        self._g = handle
        self._conf = conf or CONF

    def __repr__(self):
        return '<GuestfsFiles %r>' % self._g

    def _call(self, path, method, *args):
        try:
            return getattr(self._g, method)(*args)
        except RuntimeError as err:
            raise _os_error(err, path) from err

    def _check(self, path):
        """Validate ``path`` like HostRootFiles; return it unchanged.

        ``..`` is left to the appliance, which clamps it at the guest root
        after following symlinks, as RESOLVE_IN_ROOT does.
        """
        return guestfiles.validate_guest_path(path, self._conf)

    def _split(self, path):
        parts = [p for p in self._check(path).split('/') if p not in
                 ('', '.')]
        if not parts or parts[-1] == '..':
            raise _refused(path, 'it does not name a file')
        return '/' + '/'.join(parts[:-1]), parts[-1]

    # -- reading ------------------------------------------------------------

    def exists(self, path):
        return self._call(path, 'exists', self._check(path))

    def read(self, path):
        self._check(path)
        if not self._call(path, 'is_file', path, True):
            if not self.exists(path):
                raise FileNotFoundError(errno.ENOENT, 'No such file', path)
            raise _refused(path, 'it is not a regular file')
        if self._call(path, 'statns', path)['st_size'] > \
                guestpath.READ_LIMIT:
            raise _refused(path, 'it is larger than %d bytes'
                           % guestpath.READ_LIMIT)
        return self._call(path, 'read_file', path)

    def stat(self, path):
        if not self.exists(path):
            raise FileNotFoundError(errno.ENOENT, 'No such file', path)
        st = self._call(path, 'statns', path)
        return st['st_mode'], st['st_uid'], st['st_gid']

    # -- writing ------------------------------------------------------------

    def makedirs(self, path, mode=0o755, uid=0, gid=0):
        parts = [p for p in self._check(path).split('/') if p not in
                 ('', '.')]
        for depth in range(1, len(parts) + 1):
            current = '/' + '/'.join(parts[:depth])
            if self._call(current, 'is_dir', current, True):
                continue
            if self._call(current, 'exists', current) or \
                    self._call(current, 'is_symlink', current):
                # Not a directory, or a dangling symlink whose target we
                # refuse to create.
                raise _refused(path, '%s exists but is not a directory in '
                               'the guest' % current)
            self._call(current, 'mkdir_mode', current, 0o700)
            self._set_owner_mode(current, mode, uid, gid)

    def _set_owner_mode(self, path, mode, uid, gid):
        self._call(path, 'chown', uid, gid, path)
        self._call(path, 'chmod', mode, path)  # after chown, which may clear

    def write(self, path, data, mode=0o644, uid=0, gid=0, append=False):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError('guest file data must be bytes, not %s'
                            % type(data).__name__)
        parent, name = self._split(path)
        if not self._call(parent, 'is_dir', parent, True):
            raise FileNotFoundError(errno.ENOENT, 'No such directory',
                                    parent)
        target = posixpath.join(parent, name)
        if self._call(target, 'is_symlink', target):
            link = self._call(target, 'readlink', target)
            raise _refused(path, 'it is a symbolic link to %s; remove the '
                           'link from the image to inject this file' % link)
        exists = self._call(target, 'exists', target)
        if exists and not self._call(target, 'is_file', target):
            raise _refused(path, 'it is not a regular file')
        if append and exists:
            self._call(target, 'write_append', target, bytes(data))
        elif append:
            self._create(target, bytes(data), mode, uid, gid)
        else:
            self._replace(parent, target, bytes(data), mode, uid, gid,
                          exists)

    def _create(self, target, data, mode, uid, gid):
        self._call(target, 'write', target, data)
        self._set_owner_mode(target, mode, uid, gid)

    def _replace(self, parent, target, data, mode, uid, gid, exists):
        if exists:
            st = self._call(target, 'statns', target)
            mode = stat.S_IMODE(st['st_mode'])
            uid, gid = st['st_uid'], st['st_gid']
        tmp = posixpath.join(parent, '.nova-ksm-inject-%s.tmp'
                             % secrets.token_hex(8))
        try:
            self._create(tmp, data, mode, uid, gid)
            # rename() replaces the directory entry and never follows it.
            self._call(target, 'rename', tmp, target)
        except BaseException:
            try:
                self._g.rm_f(tmp)
            except RuntimeError:
                pass
            raise

    def chmod(self, path, mode):
        self._call(path, 'chmod', mode, self._check(path))

    def chown(self, path, uid, gid):
        self._call(path, 'chown', uid, gid, self._check(path))


def mount_guest(handle, image, partition):
    """Mount the guest root (and, when inspecting, its other filesystems)
    at ``/`` inside the appliance."""
    if partition == base.PARTITION_INSPECT:
        _mount_inspected(handle, image)
        return
    device = '/dev/sda%s' % (partition or '')
    if partition > 0 and device not in handle.list_partitions():
        found = ', '.join(p[len('/dev/sda'):] for p in
                          handle.list_partitions()) or 'none'
        raise exception.HandlerFailed(
            reason='partition %d not found in %s (partitions: %s); set '
                   '--partition or [libvirt] inject_partition to one of '
                   'them, or 0 for a whole-disk filesystem'
                   % (partition, image.path, found))
    try:
        handle.mount(device, '/')
    except RuntimeError as err:
        raise exception.HandlerFailed(
            reason='no mountable filesystem on %s of %s (%s); choose the '
                   'partition with --partition N or inspect'
                   % (device, image.path, utils.last_line(str(err)))) from err
    LOG.info('libguestfs mounted %s of %s', device, image.path)


def _mount_inspected(handle, image):
    roots = handle.inspect_os()
    if len(roots) != 1:
        raise exception.HandlerFailed(
            reason='libguestfs inspection found %s in %s; give the root '
                   'partition number instead of inspect'
                   % ('no operating system' if not roots else
                      'several operating systems (%s)' % ', '.join(roots),
                      image.path))
    root = roots[0]
    mountpoints = handle.inspect_get_mountpoints(root)
    # Parents before children: "/" before "/boot" before "/boot/efi".
    for path, device in sorted(mountpoints.items(), key=lambda i: len(i[0])):
        try:
            handle.mount(device, path)
        except RuntimeError as err:
            if path == '/':
                raise exception.HandlerFailed(
                    reason='cannot mount the root %s of %s: %s'
                           % (device, image.path, err)) from err
            LOG.warning('Cannot mount %s at %s of %s (%s); going on without '
                        'it', device, path, image.path, err)
    LOG.info('libguestfs found %s %s on %s of %s',
             handle.inspect_get_type(root), handle.inspect_get_distro(root),
             root, image.path)
