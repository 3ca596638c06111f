"""Guest paths resolved inside a guest filesystem mounted on the host.

Every guest path is opened relative to a directory fd of the guest root with
openat2(2) and ``RESOLVE_IN_ROOT``: the kernel treats that fd as ``/`` while
resolving, so ``..`` stops at it and absolute or relative symlinks in the
image resolve inside it (CVE-2012-3360/3361/3447). ``RESOLVE_NO_XDEV``
refuses to cross into another mount, ``RESOLVE_NO_MAGICLINKS`` refuses
procfs-style links. Files are then created or renamed with ``*at`` calls on
the resolved parent directory fd, so no path is looked up twice (no
check-then-write race).

A final-component symlink is refused for ``write`` (append and replace):
following it, even inside the root, would write the key or password into
whatever guest file the image chose (``authorized_keys -> /etc/passwd``).
Reads, ``stat``, ``chmod`` and ``chown`` follow symlinks inside the root.
A replaced file is a new inode with the old mode and owner but not its
extended attributes (SELinux label, ACLs); inject.py has SELinux guests
relabel at next boot.

openat2 appeared in Linux 5.6. Without it (ENOSYS) paths are walked one
component at a time with ``O_NOFOLLOW``, refusing every symlink.
"""

import contextlib
import errno
import os
import secrets
import stat

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import guestfiles
from nova_ksm_inject.disk.guestfiles import GuestFiles
from nova_ksm_inject.disk.openat2 import openat2

LOG = logging.getLogger(__name__)

# A guest file we read into memory (shadow, authorized_keys) larger than
# this is a hostile image, not a config file.
READ_LIMIT = 64 * 1024 * 1024


@contextlib.contextmanager
def _closing(fd):
    try:
        yield fd
    finally:
        os.close(fd)


def _proc_fd(fd):
    # Host procfs path of an O_PATH fd: chmod/chown act on that inode without
    # opening it (a guest device node or FIFO must never be opened).
    return '/proc/self/fd/%d' % fd


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _refused(path, reason):
    return exception.GuestPathRefused(path=path, reason=reason)


class HostRootFiles(GuestFiles):
    """:class:`GuestFiles` for a guest filesystem mounted at ``root``.

    The root directory fd stays open until :meth:`close` (close it before
    unmounting). ``use_openat2=None`` probes the kernel; False forces the
    symlink-refusing component walk.
    """

    def __init__(self, root, conf=None, use_openat2=None):
        self.root = root
        self._conf = conf or CONF
        self._root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY |
                                os.O_CLOEXEC)
        self._root_dev = os.fstat(self._root_fd).st_dev
        if use_openat2 is None:
            use_openat2 = self._probe_openat2()
        self.use_openat2 = use_openat2

    def _probe_openat2(self):
        try:
            os.close(openat2(self._root_fd, '.', os.O_PATH))
        except OSError as err:
            if err.errno != errno.ENOSYS:
                raise
            LOG.info('openat2 is unavailable (Linux < 5.6); guest paths under '
                     '%s are walked without following any symlink', self.root)
            return False
        return True

    def close(self):
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return '<HostRootFiles %s>' % self.root

    # -- resolution -------------------------------------------------------

    def _parts(self, path):
        """Validate guest ``path``; return its components (no '', '.')."""
        guestfiles.validate_guest_path(path, self._conf)
        return [p for p in path.split('/') if p not in ('', '.')]

    def _open_parts(self, path, parts, flags):
        if self._root_fd is None:
            raise ValueError('HostRootFiles for %s is closed' % self.root)
        if not self.use_openat2:
            return self._walk(path, parts, flags)
        try:
            return openat2(self._root_fd, '/'.join(parts) or '.', flags,
                           name='/' + '/'.join(parts))
        except OSError as err:
            if err.errno == errno.EXDEV:
                raise _refused(path, 'it crosses a mount point') from err
            if err.errno == errno.ELOOP:
                raise _refused(path, 'too many symbolic links or a magic '
                               'link on the way') from err
            raise

    def _open(self, path, flags):
        return self._open_parts(path, self._parts(path), flags)

    def _walk(self, path, parts, flags):
        """Resolve without openat2: one O_NOFOLLOW open per component.

        With every symlink refused, ``..`` can be applied lexically (and
        clamped at the root) without changing what the path names.
        """
        clean = []
        for part in parts:
            if part != '..':
                clean.append(part)
            elif clean:
                clean.pop()
        dir_fd = self._root_fd
        try:
            for part in clean[:-1]:
                fd = self._walk_step(path, dir_fd, part,
                                     os.O_PATH | os.O_DIRECTORY)
                if dir_fd != self._root_fd:
                    os.close(dir_fd)
                dir_fd = fd
            return self._walk_step(path, dir_fd, clean[-1] if clean else '.',
                                   flags)
        finally:
            if dir_fd != self._root_fd:
                os.close(dir_fd)

    def _walk_step(self, path, dir_fd, part, flags):
        try:
            fd = os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                    os.stat(part, dir_fd=dir_fd,
                            follow_symlinks=False).st_mode):
                raise _refused(path, '%s is a symbolic link (refused without '
                               'openat2)' % part) from err
            raise
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode) or st.st_dev != self._root_dev:
            os.close(fd)
            raise _refused(path, '%s is a symbolic link or a mount point '
                           '(refused without openat2)' % part)
        return fd

    def _parent(self, path, parts=None):
        """Open the parent directory of ``path``; return ``(fd, name)``."""
        parts = self._parts(path) if parts is None else parts
        if not parts or parts[-1] == '..':
            raise _refused(path, 'it does not name a file')
        fd = self._open_parts(path, parts[:-1], os.O_PATH | os.O_DIRECTORY)
        return fd, parts[-1]

    # -- GuestFiles -------------------------------------------------------

    def exists(self, path):
        try:
            os.close(self._open(path, os.O_PATH))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def read(self, path):
        fd = self._open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        with open(fd, 'rb') as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _refused(path, 'it is not a regular file')
            if st.st_size > READ_LIMIT:
                raise _refused(path, 'it is larger than %d bytes' % READ_LIMIT)
            data = handle.read(READ_LIMIT + 1)
        if len(data) > READ_LIMIT:
            raise _refused(path, 'it is larger than %d bytes' % READ_LIMIT)
        return data

    def stat(self, path):
        with _closing(self._open(path, os.O_PATH)) as fd:
            st = os.fstat(fd)
        return st.st_mode, st.st_uid, st.st_gid

    def makedirs(self, path, mode=0o755, uid=0, gid=0):
        parts = self._parts(path)
        for depth in range(1, len(parts) + 1):
            try:
                fd = self._open_parts(path, parts[:depth],
                                      os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                self._mkdir(path, parts[:depth], mode, uid, gid)
            else:
                os.close(fd)

    def _mkdir(self, path, parts, mode, uid, gid):
        parent, name = self._parent(path, parts)
        with _closing(parent):
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError as err:
                # Either a racing mkdir (fine) or a dangling symlink, whose
                # target we refuse to create.
                self._existing_dir(path, parts, err)
                return
            with _closing(os.open(name, os.O_RDONLY | os.O_DIRECTORY |
                                  os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=parent)) as fd:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after chown, which may clear bits

    def _existing_dir(self, path, parts, err):
        try:
            os.close(self._open_parts(path, parts, os.O_PATH | os.O_DIRECTORY))
        except OSError:
            raise _refused(path, '/%s exists but is not a directory in the '
                           'guest' % '/'.join(parts)) from err

    def write(self, path, data, mode=0o644, uid=0, gid=0, append=False):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError('guest file data must be bytes, not %s'
                            % type(data).__name__)
        parent, name = self._parent(path)
        with _closing(parent):
            if append:
                self._append(parent, path, name, data, mode, uid, gid)
            else:
                self._replace(parent, path, name, data, mode, uid, gid)

    def _append(self, parent, path, name, data, mode, uid, gid):
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW |
                         os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                         dir_fd=parent)
        except FileNotFoundError:
            fd = self._create(parent, name, mode, uid, gid)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise self._symlink_refused(parent, path, name) from err
            raise
        with _closing(fd):
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _refused(path, 'it is not a regular file')
            _write_all(fd, data)

    def _replace(self, parent, path, name, data, mode, uid, gid):
        try:
            old = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None:
            if stat.S_ISLNK(old.st_mode):
                raise self._symlink_refused(parent, path, name)
            if not stat.S_ISREG(old.st_mode):
                raise _refused(path, 'it is not a regular file')
            mode, uid, gid = stat.S_IMODE(old.st_mode), old.st_uid, old.st_gid
        tmp = '.nova-ksm-inject-%s.tmp' % secrets.token_hex(8)
        try:
            with _closing(self._create(parent, tmp, mode, uid, gid)) as fd:
                _write_all(fd, data)
                os.fsync(fd)
            # rename() replaces the directory entry and never follows it.
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise

    @staticmethod
    def _create(parent, name, mode, uid, gid):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            os.unlink(name, dir_fd=parent)
            raise
        return fd

    @staticmethod
    def _symlink_refused(parent, path, name):
        target = os.readlink(name, dir_fd=parent)
        return _refused(path, 'it is a symbolic link to %s; remove the link '
                        'from the image to inject this file' % target)

    def chmod(self, path, mode):
        with _closing(self._open(path, os.O_PATH)) as fd:
            os.chmod(_proc_fd(fd), mode)

    def chown(self, path, uid, gid):
        with _closing(self._open(path, os.O_PATH)) as fd:
            os.chown(_proc_fd(fd), uid, gid)
