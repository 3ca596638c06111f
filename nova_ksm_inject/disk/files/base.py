"""The GuestFiles interface and the rules every implementation keeps.

Injection (``inject.py``) only talks to :class:`GuestFiles`. The rules are
written once, here, on top of a few primitives each implementation gives
(:mod:`.host` on a host mount, :mod:`.appliance` in libguestfs):

* guest paths are absolute strings without NUL, at most ``[inject]
  max_injected_file_path_length`` characters; ``..`` and symlinks resolve
  inside the guest root (the implementation's job: CVE-2012-3360/3361);
* a write never follows a symlink in the last component (``authorized_keys
  -> /etc/passwd`` would put the key into whatever file the image chose);
  only regular files are read or written; a read is at most READ_LIMIT;
* a replaced file is a new file: written under a temporary name in the same
  directory and renamed over the old one, with the old one's mode and owner
  (or, with ``enforce``, the ones asked for);
* an append adds to the file in place, unless it has more than one hard
  link: then it is replaced by old + new content, so the other names keep
  theirs (a key must never reach a hard link to /etc/passwd);
* modes and owners are only set on a file or directory that was just
  created, or checked not to be a symlink and opened as such (by
  descriptor on the host), and never on an inode with other hard links:
  no mode or owner change can land on another guest file
  (``/root/.ssh -> /etc`` must not make /etc 0700).

A replaced file loses its extended attributes (SELinux label, ACLs):
inject.py has SELinux guests relabel at next boot. Owners are guest ids.
"""

import abc
import collections
import contextlib
import dataclasses
import secrets
import stat

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF

# A guest file we read into memory (shadow, authorized_keys) larger than
# this is a hostile image, not a config file.
READ_LIMIT = 64 * 1024 * 1024
FILE, DIR, LINK, OTHER = 'file', 'directory', 'symlink', 'other'

#: Mode (permission bits) and owner a file or directory gets.
Perms = collections.namedtuple('Perms', 'mode uid gid')


@dataclasses.dataclass(frozen=True)
class Node:
    """A directory entry as lstat(2) shows it."""

    kind: str
    mode: int
    uid: int
    gid: int
    nlink: int = 1
    size: int = 0

    @classmethod
    def of(cls, st_mode, uid, gid, nlink=1, size=0):
        """Build from a full ``st_mode`` (file type and permission bits)."""
        kind = (FILE if stat.S_ISREG(st_mode) else
                DIR if stat.S_ISDIR(st_mode) else
                LINK if stat.S_ISLNK(st_mode) else OTHER)
        return cls(kind, stat.S_IMODE(st_mode), uid, gid, nlink, size)

    @property
    def perms(self):
        return Perms(self.mode, self.uid, self.gid)


def refused(path, reason):
    return exception.GuestPathRefused(path=path, reason=reason)


def validate_guest_path(path, conf):
    """Check ``path`` is a usable guest path and return it.

    :raises GuestPathRefused: naming the rule broken.
    """
    if not isinstance(path, str):
        raise refused(repr(path), 'a guest path must be a string')
    if '\0' in path:
        raise refused(repr(path), 'it contains a NUL byte')
    if not path.startswith('/'):
        raise refused(path, 'it is not absolute')
    limit = conf.inject.max_injected_file_path_length
    if len(path) > limit:
        raise refused(path[:64] + '...', 'it is longer than %d characters '
                      '([inject] max_injected_file_path_length)' % limit)
    return path


def check_readable(path, node):
    """A file we read: regular, at most READ_LIMIT bytes."""
    if node.kind != FILE:
        raise refused(path, 'it is not a regular file')
    check_size(path, node.size)


def check_size(path, size):
    """At most READ_LIMIT bytes."""
    if size > READ_LIMIT:
        raise refused(path, 'it is larger than %d bytes' % READ_LIMIT)


def check_in_place(path, node):
    """A file we append to in place: regular, its only name."""
    if node.kind != FILE:
        raise refused(path, 'it is not a regular file')
    if node.nlink != 1:
        raise refused(path, 'it gained a hard link while being written')


class GuestFiles(metaclass=abc.ABCMeta):
    """What injection needs from a guest filesystem rooted at its ``/``.

    Subclasses give the primitives (``_directory`` ... ``_discard``); a
    ``parent`` is what ``_directory`` yielded, ``name`` one entry in it.
    """

    def __init__(self, conf=None):
        self._conf = conf or CONF

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):  # noqa: B027 - optional hook, not abstract
        """Release what the implementation holds (open directory fds)."""

    # -- the interface ------------------------------------------------------

    @abc.abstractmethod
    def exists(self, path):
        """True if ``path`` exists in the guest (symlinks resolved in root)."""

    def read(self, path):
        """The bytes of regular file ``path`` (symlinks resolved in root).

        :raises FileNotFoundError: it does not exist.
        :raises GuestPathRefused: not a regular file, or too large.
        """
        return self._read(path, self._parts(path))

    def makedirs(self, path, mode=0o755, uid=0, gid=0, enforce=False):
        """Create ``path`` and missing parents with ``mode`` and ``uid:gid``.

        Existing directories, and symlinks to directories on the way, are
        kept as they are. With ``enforce`` the last one gets ``mode`` and
        ``uid:gid`` even if it exists, and must not be a symlink.

        :raises GuestPathRefused: something on the way is not a directory.
        """
        parts = self._parts(path)
        perms = Perms(mode, uid, gid)
        for depth, name in enumerate(parts, 1):
            if name == '..':
                continue
            last = depth == len(parts)
            with self._directory(path, parts[:depth - 1]) as parent:
                node = self._lstat(parent, name)
                if node is None:
                    self._mkdir(parent, name)
                    self._set_dir_perms(parent, name, perms, path)
                elif node.kind == LINK:
                    self._check_dir_link(path, parent, parts[:depth],
                                         enforce and last)
                elif node.kind != DIR:
                    raise refused(path, '/%s exists but is not a directory '
                                  'in the guest' % '/'.join(parts[:depth]))
                elif enforce and last:
                    self._set_dir_perms(parent, name, perms, path)

    def write(self, path, data, mode=0o644, uid=0, gid=0, append=False,
              enforce=False):
        """Write ``data`` (bytes) to ``path``; its directory must exist.

        A new file gets ``mode`` and ``uid:gid``; an existing one keeps its
        own unless ``enforce``. Without ``append`` an existing file is
        replaced; with it ``data`` is added at its end (in place, or by
        replacing a file that has other hard links).

        :raises GuestPathRefused: a symlink, or not a regular file.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError('guest file data must be bytes, not %s'
                            % type(data).__name__)
        data = bytes(data)
        parts = self._parts(path)
        if not parts or parts[-1] == '..':
            raise refused(path, 'it does not name a file')
        name = parts[-1]
        with self._directory(path, parts[:-1]) as parent:
            old = self._lstat(parent, name)
            wanted = Perms(mode, uid, gid)
            if old is None and append:
                self._create(parent, name, data, wanted)
            elif old is None:
                self._replace(parent, name, data, wanted)
            else:
                self._check_target(path, parent, name, old)
                self._rewrite(parent, name, data, old,
                              wanted if enforce else None, append, path)

    # -- shared steps -------------------------------------------------------

    def _parts(self, path):
        """Validate guest ``path``; return its components (no '', '.')."""
        validate_guest_path(path, self._conf)
        return [p for p in path.split('/') if p not in ('', '.')]

    def _check_target(self, path, parent, name, old):
        if old.kind == LINK:
            raise refused(path, 'it is a symbolic link to %s; remove the link '
                          'from the image to inject this file'
                          % self._readlink(parent, name))
        if old.kind != FILE:
            raise refused(path, 'it is not a regular file')

    def _check_dir_link(self, path, parent, parts, enforce):
        """A symlink on the way to a directory: followed inside the root,
        unless its mode is to be set (that would land on the target)."""
        shown = '/' + '/'.join(parts)
        target = self._readlink(parent, parts[-1])
        if enforce:
            raise refused(path, '%s is a symbolic link to %s; remove the '
                          'link from the image to inject this'
                          % (shown, target))
        try:
            with self._directory(path, parts):
                pass
        except (FileNotFoundError, NotADirectoryError) as err:
            raise refused(path, '%s is a symbolic link to %s, which is not '
                          'a directory in the guest' % (shown, target)) \
                from err

    def _rewrite(self, parent, name, data, old, enforced, append, path):
        """An existing regular file: appended to in place while it is its
        inode's only name, else replaced (other names keep their data)."""
        if append and old.nlink == 1:
            self._append(parent, name, data, enforced, path)
            return
        if append:
            data = self._read_entry(parent, name, path) + data
        self._replace(parent, name, data, enforced or old.perms)

    def _replace(self, parent, name, data, perms):
        tmp = '.nova-ksm-inject-%s.tmp' % secrets.token_hex(8)
        try:
            self._create(parent, tmp, data, perms)
            # rename() replaces the directory entry and never follows it.
            self._rename(parent, tmp, name)
        except BaseException:
            with contextlib.suppress(Exception):
                self._discard(parent, tmp)
            raise

    # -- primitives ---------------------------------------------------------

    @abc.abstractmethod
    def _read(self, path, parts):
        """Read a regular file, following symlinks inside the root."""

    @abc.abstractmethod
    def _directory(self, path, parts):
        """Context manager: the directory ``parts``, resolved in root."""

    @abc.abstractmethod
    def _lstat(self, parent, name):
        """:class:`Node` of ``name`` (not followed), or None if missing."""

    @abc.abstractmethod
    def _readlink(self, parent, name):
        """The target of symlink ``name``."""

    @abc.abstractmethod
    def _mkdir(self, parent, name):
        """Create directory ``name``, mode 0700 until its perms are set."""

    @abc.abstractmethod
    def _set_dir_perms(self, parent, name, perms, path):
        """Give directory ``name`` (not a symlink) mode and owner."""

    @abc.abstractmethod
    def _create(self, parent, name, data, perms):
        """Create the new file ``name`` with ``perms``, then ``data``."""

    @abc.abstractmethod
    def _append(self, parent, name, data, perms, path):
        """Append in place (:func:`check_in_place`); ``perms`` if given."""

    @abc.abstractmethod
    def _read_entry(self, parent, name, path):
        """Read regular file ``name``, not following it."""

    @abc.abstractmethod
    def _rename(self, parent, old, new):
        """Rename ``old`` over ``new`` in ``parent``."""

    @abc.abstractmethod
    def _discard(self, parent, name):
        """Remove ``name`` (a temporary file) if it exists."""
