"""Image files opened once, without symlinks, and handed to tools by fd.

The privileged side checks an image path and then hands it to qemu-img,
losetup and qemu-storage-daemon. Between the check and the tool's own
open, whoever owns the directory (the nova user owns the instance
directories) could swap the file for a symlink to ``/etc/shadow``. So the
file is opened once here, with every symlink refused by the kernel
(openat2 ``RESOLVE_NO_SYMLINKS``, Linux 5.6+; a component walk with
``O_NOFOLLOW`` before that), and tools are given ``/proc/<pid>/fd/<n>``:
the kernel reopens that very inode, whatever the path now names.
"""

import dataclasses
import errno
import os
import stat

from nova_ksm_inject import exception
from nova_ksm_inject.disk import openat2

# O_NONBLOCK: a FIFO the directory's owner put in the image's place must
# not hang the privileged side in open(); it is refused as not regular.
_FLAGS = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
_NO_LINKS = openat2.RESOLVE_NO_SYMLINKS | openat2.RESOLVE_NO_MAGICLINKS


@dataclasses.dataclass(frozen=True)
class OpenedFile:
    """A regular file held open.

    :ivar path: the absolute path it was reached by (no symlinks in it).
    :ivar fd: the open descriptor (closed by the holder's unwinding).
    :ivar source: what tools open: ``/proc/<pid>/fd/<fd>``.
    """

    path: str
    fd: int
    source: str


def open_regular(path, holder, within=None):
    """Open ``path`` read-only; register its close on ``holder``.

    :param holder: has ``callback(func, *args)`` (a journal, an ExitStack).
    :param within: None: resolve symlinks first (a root caller naming its
        own file). Otherwise the directories the file must lie in (the
        operator's ``[inject] image_dirs``): the directory itself is
        trusted as configured, and below it every symlink and ``..`` is
        refused by the kernel.
    :raises ImageNotFound: missing, or not a regular file.
    :raises ImageRefused: outside ``within``, or reached through a symlink.
    """
    if within is None:
        path = os.path.realpath(path)
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        raise exception.ImageRefused(
            path=path, reason='give a normalised absolute path (no "..", '
                              '"." or double slashes)')
    try:
        fd = _open_checked(path, within)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EXDEV):
            raise exception.ImageRefused(
                path=path, reason='it is reached through a symlink, which '
                                  'the privileged side never follows; name '
                                  'the file itself') from err
        raise exception.ImageNotFound(path=path) from err
    holder.callback(os.close, fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise exception.ImageNotFound(path=path)
    return OpenedFile(path, fd, '/proc/%d/fd/%d' % (os.getpid(), fd))


def _open_checked(path, within):
    if within is None:
        return _open_no_symlinks(path)
    for directory in within:
        directory = os.path.normpath(directory)
        if os.path.commonpath([path, directory]) == directory and \
                path != directory:
            dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY |
                             os.O_CLOEXEC)
            try:
                return openat2.openat2(
                    dir_fd, os.path.relpath(path, directory), _FLAGS,
                    resolve=_NO_LINKS | openat2.RESOLVE_BENEATH, name=path)
            finally:
                os.close(dir_fd)
    raise exception.ImageRefused(
        path=path, reason='it is not inside [inject] image_dirs (%s): the '
                          'privileged side only writes into instance '
                          'disks; move the image there or add its '
                          'directory to image_dirs'
                          % ', '.join(within or ['none']))


def _open_no_symlinks(path):
    try:
        return openat2.openat2(-100, path, _FLAGS, resolve=_NO_LINKS)
    except OSError as err:
        if err.errno != errno.ENOSYS:
            raise
    # Linux < 5.6: walk the components, refusing every symlink.
    fd = os.open('/', os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in path.split('/') if p]
        for part in parts[:-1]:
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW |
                          os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], _FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def is_within(path, directories):
    """True when ``path`` lies inside one of ``directories`` (real paths)."""
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, os.path.realpath(d)]) ==
               os.path.realpath(d) for d in directories if d)
