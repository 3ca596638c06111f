"""The configuration of a privsep daemon, pinned when it starts.

The daemon takes its options (``[inject] image_dirs``,
``trusted_backing_dirs``, ``[ksm]``...) from configuration files, and a
file anyone but root could have written lets that someone choose what
root writes. So ``nova-ksm-inject-privsep-helper``
(:mod:`nova_ksm_inject.cmd.privsep_helper`) opens each file once, walking
from ``/`` one component at a time without following any symlink, checks
on the descriptors that every directory and the file belong to root and
are not writable by group or others (:func:`pin`), and has oslo.config
parse exactly those descriptors (``/proc/self/fd/N``), which stay open.

Paths are never looked at again: what was checked is what was parsed,
whatever is renamed or swapped for a symlink afterwards. Each entrypoint
calls :func:`check_config_files`, which refuses to work in a daemon whose
configuration was not pinned this way (one started by oslo.privsep's own
``privsep-helper``, which takes configuration files from its caller).
"""

import errno
import os
import stat

from oslo_config import cfg

from nova_ksm_inject import exception

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FIX = ('keep it and every directory above it owned by root and not '
        'writable by group or others, with no symlink on the way '
        '(name the real file)')


class Unsafe(exception.ConfigError):
    msg_fmt = 'configuration file %(path)s refused: %(reason)s; %(fix)s'

    def __init__(self, **kwargs):
        kwargs.setdefault('fix', _FIX)
        super().__init__(**kwargs)


class PinnedFile:
    """One configuration file, open; ``config_path`` is what oslo.config
    is given to parse (the descriptor, not the name)."""

    def __init__(self, path, fd):
        self.path = path
        self.fd = fd
        info = os.fstat(fd)
        self.identity = (info.st_dev, info.st_ino)
        self.config_path = '/proc/self/fd/%d' % fd

    def read(self):
        chunks = []
        while chunk := os.pread(self.fd, 65536, sum(map(len, chunks))):
            chunks.append(chunk)
        return b''.join(chunks).decode()


#: The files this daemon's configuration was parsed from (set by the
#: helper before it parses them); None in any other process.
_pinned = None


def _refuse_owner(path, info, what):
    if info.st_uid != 0:
        raise Unsafe(path=path, reason='%s belongs to uid %d'
                     % (what, info.st_uid))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Unsafe(path=path, reason='%s is writable by group or others '
                     '(mode %o)' % (what, stat.S_IMODE(info.st_mode)))


def _parts(path):
    parts = [p for p in path.split('/') if p]
    if not path.startswith('/') or not parts or \
            any(p in ('.', '..') for p in parts):
        raise Unsafe(path=path, reason='not an absolute path without . or ..',
                     fix='name the file by its absolute path')
    return parts


def open_pinned(path, missing_ok=False):
    """Open ``path`` for good, checked on its descriptors as described
    above; a :class:`PinnedFile`, or None when it is missing and
    ``missing_ok``.

    :raises Unsafe: naming the file, why and the fix.
    """
    parts = _parts(path)
    where = os.open('/', _DIR_FLAGS)
    try:
        walked = '/'
        for name in parts[:-1]:
            _refuse_owner(path, os.fstat(where), walked)
            walked = os.path.join(walked, name)
            step = _open_step(path, name, _DIR_FLAGS, where, missing_ok)
            os.close(where)
            where = step
            if where is None:
                return None
        _refuse_owner(path, os.fstat(where), walked)
        fd = _open_step(path, parts[-1], _FILE_FLAGS, where, missing_ok)
    finally:
        if where is not None:
            os.close(where)
    if fd is None:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unsafe(path=path, reason='not a regular file')
        _refuse_owner(path, info, 'the file')
    except Exception:
        os.close(fd)
        raise
    return PinnedFile(path, fd)


def _open_step(path, name, flags, where, missing_ok):
    try:
        return os.open(name, flags, dir_fd=where)
    except OSError as err:
        if err.errno == errno.ENOENT and missing_ok:
            return None
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_NOFOLLOW on a symlink: ELOOP for the file, ENOTDIR (or
            # ELOOP) for a directory.
            raise Unsafe(path=path, reason='%s is a symlink or not a '
                         'directory' % name) from err
        raise Unsafe(path=path, reason=err.strerror,
                     fix='create it, readable by root') from err


def pin(files):
    """Record ``files`` (PinnedFiles) as this daemon's configuration."""
    global _pinned
    _pinned = tuple(files)


def check_config_files(conf=cfg.CONF):
    """Raise ConfigError unless ``conf`` was parsed from pinned files.

    :raises ConfigError: naming what is wrong and the fix.
    """
    def refuse(why):
        raise exception.ConfigError(reason=(
            'the privileged helper refuses to work: %s, so a user could '
            'have chosen what root writes; start it with '
            'nova-ksm-inject-privsep-helper (helper_command = sudo '
            'nova-ksm-inject-privsep-helper)' % why))

    if _pinned is None:
        refuse('its configuration files were not pinned when it started')
    expected = [f.config_path for f in _pinned]
    parsed = list(getattr(conf, 'config_file', None) or [])
    if parsed != expected or getattr(conf, 'config_dir', None):
        refuse('it parsed %s, not the pinned files' % (parsed, ))
    for pinned in _pinned:
        info = os.fstat(pinned.fd)
        if (info.st_dev, info.st_ino) != pinned.identity:
            refuse('the descriptor of %s was replaced' % pinned.path)
