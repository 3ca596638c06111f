"""Guest file owners, checked with or without root.

Injected files belong to guest uid 0, which only root may give. As root
the owners are real. Otherwise ``guestpath`` gets an ``os`` whose
``chown``/``fchown`` record the owner asked for on that very inode (the
one the descriptor or ``/proc/self/fd`` path names) instead of failing
with EPERM, and whose ``stat`` calls report the recorded owner, so code
that keeps an existing file's owner sees what it would see as root.
Either way a test asserts the owner a guest file ends up with.
"""

import os
import stat

import pytest

from nova_ksm_inject.disk import guestpath


class _OwnedStat:
    """A stat result with the recorded owner."""

    def __init__(self, real, uid, gid):
        self._real = real
        self.st_uid = uid
        self.st_gid = gid

    def __getattr__(self, name):
        return getattr(self._real, name)


class _RecordingOs:
    """``os`` for guestpath without root: owners recorded per inode."""

    def __init__(self, table):
        self._table = table

    def __getattr__(self, name):
        return getattr(os, name)

    def _view(self, st):
        owner = self._table.get((st.st_dev, st.st_ino))
        return st if owner is None else _OwnedStat(st, *owner)

    def _record(self, st, uid, gid):
        old_uid, old_gid = self._view(st).st_uid, self._view(st).st_gid
        self._table[(st.st_dev, st.st_ino)] = (
            old_uid if uid == -1 else uid, old_gid if gid == -1 else gid)

    def fchown(self, fd, uid, gid):
        self._record(os.fstat(fd), uid, gid)

    def chown(self, path, uid, gid, *, dir_fd=None, follow_symlinks=True):
        self._record(os.stat(path, dir_fd=dir_fd,
                             follow_symlinks=follow_symlinks), uid, gid)

    def stat(self, path, *, dir_fd=None, follow_symlinks=True):
        return self._view(os.stat(path, dir_fd=dir_fd,
                                  follow_symlinks=follow_symlinks))

    def lstat(self, path, *, dir_fd=None):
        return self._view(os.lstat(path, dir_fd=dir_fd))

    def fstat(self, fd):
        return self._view(os.fstat(fd))


class Owners:
    """Sets and reads guest file owners (real ones when root)."""

    def __init__(self, monkeypatch):
        self.real = os.geteuid() == 0
        self._os = None
        if not self.real:
            self._os = _RecordingOs({})
            monkeypatch.setattr(guestpath, 'os', self._os)

    def chown(self, path, uid, gid):
        """Give ``path`` an owner, as the image builder did."""
        (os if self.real else self._os).chown(path, uid, gid)

    def of(self, path):
        """``(permission bits, uid, gid)`` of ``path``."""
        st = (os if self.real else self._os).stat(path)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.fixture
def owners(monkeypatch):
    """:class:`Owners`; use it before guestpath writes anything."""
    return Owners(monkeypatch)
