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
        own file). Otherwise the directories the file must lie in, as the
        operator configured them: each is resolved now by
        :func:`resolve_operator_dir`, and below it no symlink and no ``..``
        is followed.
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
        return _open_beneath('/', path.lstrip('/'), _FLAGS)
    for configured in within:
        real = resolve_operator_dir(configured)
        for directory in {os.path.normpath(configured), real} - {None}:
            if os.path.commonpath([path, directory]) == directory and \
                    path != directory:
                return _open_beneath(real, os.path.relpath(path, directory),
                                     _FLAGS)
    raise exception.ImageRefused(
        path=path, reason='it is not inside [inject] image_dirs (%s): the '
                          'privileged side only writes into instance '
                          'disks; move the image there or add its '
                          'directory to image_dirs'
                          % ', '.join(within or ['none']))


def _open_beneath(directory, relative, flags):
    """Open ``directory``/``relative`` following no symlink at all (the
    directory itself is a real path) and no ``..`` out of it."""
    try:
        return openat2.openat2(-100, os.path.join(directory, relative),
                               flags, resolve=_NO_LINKS)
    except OSError as err:
        if err.errno != errno.ENOSYS:
            raise
    # Linux < 5.6: walk one component at a time, refusing every symlink.
    parts = [p for p in os.path.join(directory, relative).split('/') if p]
    if '..' in parts:
        raise OSError(errno.EXDEV, 'a ".." component', relative)
    fd = os.open('/', os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW |
                          os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def _ours(uid):
    # Root's (the daemon's), or this process's own when it is not root.
    return uid in (0, os.geteuid())


def _root_only(directory):
    info = os.stat(directory)
    return _ours(info.st_uid) and not info.st_mode & (stat.S_IWGRP |
                                                      stat.S_IWOTH)


def resolve_operator_dir(path):
    """Real path of a directory the operator configured, or None if absent.

    Symlinks on the way are followed only where only root could have made
    them: a symlink owned by root in a directory no one else can write.
    nova owns ``instances_path`` (and often its parent): without this rule
    the nova user could turn ``_base`` into a link to ``/`` and have every
    host file trusted as a backing file, or every raw file as an image.

    :raises ConfigError: a symlink someone else could have made.
    """
    pending = [p for p in os.path.abspath(path).split('/') if p]
    current, hops = '/', 0
    while pending:
        part = pending.pop(0)
        candidate = os.path.normpath(os.path.join(current, part))
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            return None
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        hops += 1
        if hops > 40 or not _ours(info.st_uid) or not _root_only(current):
            raise exception.ConfigError(reason=(
                'configured directory %s passes through symlink %s, which a '
                'user other than root could have made or changed; configure '
                'the real directory' % (path, candidate)))
        target = os.readlink(candidate)
        if target.startswith('/'):
            current = '/'
        pending = [p for p in target.split('/') if p] + pending
    return current if os.path.isdir(current) else None
