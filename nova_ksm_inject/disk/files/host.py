"""GuestFiles on a guest filesystem mounted on the host.

Every guest path is opened relative to a directory fd of the guest root with
openat2(2) and ``RESOLVE_IN_ROOT``: the kernel treats that fd as ``/`` while
resolving, so ``..`` stops at it and absolute or relative symlinks in the
image resolve inside it (CVE-2012-3360/3361/3447). ``RESOLVE_NO_XDEV``
refuses to cross into another mount, ``RESOLVE_NO_MAGICLINKS`` refuses
procfs-style links. Entries are then created, opened (``O_NOFOLLOW``) and
renamed with ``*at`` calls on the resolved parent directory fd, and modes
and owners are set with fchmod/fchown on the descriptor opened: no path is
looked up twice, and no mode lands on a symlink's target.

openat2 appeared in Linux 5.6. Without it (ENOSYS) paths are walked one
component at a time with ``O_NOFOLLOW``, refusing every symlink.
"""

import contextlib
import errno
import os
import stat

from oslo_log import log as logging

from nova_ksm_inject.disk.files import base
from nova_ksm_inject.disk.openat2 import openat2

LOG = logging.getLogger(__name__)

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY


@contextlib.contextmanager
def _closing(fd):
    try:
        yield fd
    finally:
        os.close(fd)


def _node(st):
    return base.Node.of(st.st_mode, st.st_uid, st.st_gid, st.st_nlink,
                        st.st_size)


def _set_perms(fd, perms):
    os.fchown(fd, perms.uid, perms.gid)
    os.fchmod(fd, perms.mode)  # after chown, which may clear bits


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_fd(path, fd):
    base.check_readable(path, _node(os.fstat(fd)))
    with open(fd, 'rb', closefd=False) as handle:
        data = handle.read(base.READ_LIMIT + 1)
    base.check_size(path, len(data))
    return data


class HostRootFiles(base.GuestFiles):
    """:class:`GuestFiles` for a guest filesystem mounted at ``root``.

    The root directory fd stays open until :meth:`close` (close it before
    unmounting). ``use_openat2=None`` probes the kernel; False forces the
    symlink-refusing component walk.
    """

    def __init__(self, root, conf=None, use_openat2=None):
        super().__init__(conf)
        self.root = root
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

    def __repr__(self):
        return '<HostRootFiles %s>' % self.root

    # -- resolution ---------------------------------------------------------

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
                raise base.refused(path, 'it crosses a mount point') from err
            if err.errno == errno.ELOOP:
                raise base.refused(path, 'too many symbolic links or a magic '
                                   'link on the way') from err
            raise

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
            fd = os.open(part, flags | _NOFOLLOW, dir_fd=dir_fd)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                    os.stat(part, dir_fd=dir_fd,
                            follow_symlinks=False).st_mode):
                raise base.refused(path, '%s is a symbolic link (refused '
                                   'without openat2)' % part) from err
            raise
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode) or st.st_dev != self._root_dev:
            os.close(fd)
            raise base.refused(path, '%s is a symbolic link or a mount point '
                               '(refused without openat2)' % part)
        return fd

    # -- GuestFiles ---------------------------------------------------------

    def exists(self, path):
        try:
            os.close(self._open_parts(path, self._parts(path), os.O_PATH))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def _read(self, path, parts):
        with _closing(self._open_parts(path, parts, _READ)) as fd:
            return _read_fd(path, fd)

    @contextlib.contextmanager
    def _directory(self, path, parts):
        with _closing(self._open_parts(path, parts, os.O_PATH |
                                       os.O_DIRECTORY)) as fd:
            yield fd

    def _lstat(self, parent, name):
        try:
            return _node(os.stat(name, dir_fd=parent, follow_symlinks=False))
        except FileNotFoundError:
            return None

    def _readlink(self, parent, name):
        return os.readlink(name, dir_fd=parent)

    def _mkdir(self, parent, name):
        os.mkdir(name, 0o700, dir_fd=parent)

    def _set_dir_perms(self, parent, name, perms, path):
        flags = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW
        with _closing(os.open(name, flags, dir_fd=parent)) as fd:
            _set_perms(fd, perms)

    def _create(self, parent, name, data, perms):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW,
                     0o600, dir_fd=parent)
        with _closing(fd):
            try:
                _set_perms(fd, perms)
                _write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                os.unlink(name, dir_fd=parent)
                raise

    def _append(self, parent, name, data, perms, path):
        flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY
        with _closing(os.open(name, flags | _NOFOLLOW, dir_fd=parent)) as fd:
            # What was opened, not what lstat saw a moment ago.
            base.check_in_place(path, _node(os.fstat(fd)))
            _write_all(fd, data)
            if perms is not None:
                _set_perms(fd, perms)

    def _read_entry(self, parent, name, path):
        with _closing(os.open(name, _READ | _NOFOLLOW, dir_fd=parent)) as fd:
            return _read_fd(path, fd)

    def _rename(self, parent, old, new):
        os.rename(old, new, src_dir_fd=parent, dst_dir_fd=parent)

    def _discard(self, parent, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
