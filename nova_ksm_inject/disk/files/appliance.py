"""GuestFiles through the libguestfs API (the ``guestfs`` handler's binding).

The guest filesystem is mounted inside the libguestfs appliance, never on
the host, and the appliance daemon resolves every path chrooted into the
guest root, so ``..`` and symlinks (absolute or relative) stay inside the
guest. A directory is resolved once with ``realpath``; every entry is then
named by that symlink-free path plus one component, which ``lstatns``
checks (type, ``st_nlink``) before anything is written.

The API has no file descriptors, and its ``chmod`` follows symlinks: modes
and owners are set (``lchown``, then ``chmod``) only on an entry just
created under a fresh name, or just checked by ``lstatns`` not to be a
symlink. Nothing else runs in the appliance, so what was checked is what
gets changed.

libguestfs reports failures as RuntimeError with a message; they become
OSError (FileNotFoundError for a missing path) so injection reports them
as for any other handler.
"""

import contextlib
import errno
import posixpath

from nova_ksm_inject.disk.files import base

_ERRNOS = (('No such file or directory', errno.ENOENT),
           ('Not a directory', errno.ENOTDIR))


def _os_error(err, path):
    text = str(err)
    code = next((c for words, c in _ERRNOS if words in text), errno.EIO)
    return OSError(code, text, path)


class GuestfsFiles(base.GuestFiles):
    """:class:`GuestFiles` on a launched, mounted libguestfs handle.

    :param handle: a ``guestfs.GuestFS`` (``python_return_dict=True``) with
        the guest root mounted at ``/``; its lifetime belongs to the
        handler.
    """

    def __init__(self, handle, conf=None):
        super().__init__(conf)
        self._g = handle

    def __repr__(self):
        return '<GuestfsFiles %r>' % self._g

    def _call(self, path, method, *args):
        try:
            return getattr(self._g, method)(*args)
        except RuntimeError as err:
            raise _os_error(err, path) from err

    def _node(self, real):
        """:class:`Node` of ``real`` (not followed), or None if missing."""
        try:
            st = self._call(real, 'lstatns', real)
        except FileNotFoundError:
            return None
        return base.Node.of(st['st_mode'], st['st_uid'], st['st_gid'],
                            st['st_nlink'], st['st_size'])

    def _set_perms(self, real, perms):
        self._call(real, 'lchown', perms.uid, perms.gid, real)
        self._call(real, 'chmod', perms.mode, real)  # after chown

    # -- GuestFiles ---------------------------------------------------------

    def exists(self, path):
        self._parts(path)
        return self._call(path, 'exists', path)

    def _read(self, path, parts):
        real = self._call(path, 'realpath', path)
        return self._read_real(path, real)

    def _read_real(self, path, real):
        node = self._node(real)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, 'No such file', path)
        base.check_readable(path, node)
        return self._call(path, 'read_file', real)

    @contextlib.contextmanager
    def _directory(self, path, parts):
        shown = '/' + '/'.join(parts)
        real = self._call(shown, 'realpath', shown)
        node = self._node(real)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, 'No such directory', shown)
        if node.kind != base.DIR:
            raise NotADirectoryError(errno.ENOTDIR, 'Not a directory', shown)
        yield real

    def _lstat(self, parent, name):
        return self._node(posixpath.join(parent, name))

    def _readlink(self, parent, name):
        real = posixpath.join(parent, name)
        return self._call(real, 'readlink', real)

    def _mkdir(self, parent, name):
        real = posixpath.join(parent, name)
        self._call(real, 'mkdir_mode', real, 0o700)

    def _set_dir_perms(self, parent, name, perms, path):
        real = posixpath.join(parent, name)
        node = self._node(real)
        if node is None or node.kind != base.DIR:
            raise base.refused(path, '%s changed while being written' % real)
        self._set_perms(real, perms)

    def _create(self, parent, name, data, perms):
        real = posixpath.join(parent, name)
        if self._node(real) is not None:
            raise FileExistsError(errno.EEXIST, 'File exists', real)
        self._call(real, 'write', real, b'')
        self._set_perms(real, perms)
        if data:
            self._call(real, 'write', real, data)

    def _append(self, parent, name, data, perms, path):
        real = posixpath.join(parent, name)
        base.check_in_place(path, self._node(real) or
                            base.Node(base.OTHER, 0, 0, 0))
        if data:
            self._call(real, 'write_append', real, data)
        if perms is not None:
            self._set_perms(real, perms)

    def _read_entry(self, parent, name, path):
        return self._read_real(path, posixpath.join(parent, name))

    def _rename(self, parent, old, new):
        self._call(new, 'rename', posixpath.join(parent, old),
                   posixpath.join(parent, new))

    def _discard(self, parent, name):
        self._call(name, 'rm_f', posixpath.join(parent, name))
