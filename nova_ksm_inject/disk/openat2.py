"""openat2(2) through ctypes (Linux 5.6+; Python has no wrapper).

Used by ``guestpath.py`` to resolve guest paths with ``RESOLVE_IN_ROOT``:
the kernel treats the directory fd as ``/``, so neither ``..`` nor a symlink
in the image can reach outside the guest root; and by ``imagefile.py`` to
open image files with ``RESOLVE_NO_SYMLINKS``.
"""

import ctypes
import errno
import os
import platform

# openat2 uses the generic syscall number on both architectures.
_SYS_OPENAT2 = {'x86_64': 437, 'aarch64': 437}.get(platform.machine())
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
DEFAULT_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [('flags', ctypes.c_uint64), ('mode', ctypes.c_uint64),
                ('resolve', ctypes.c_uint64)]


def openat2(dirfd, path, flags, resolve=DEFAULT_RESOLVE, name=None):
    """openat2(2): open ``path`` relative to ``dirfd``; return the fd.

    ``name`` is the path shown in errors (default ``path``).

    :raises OSError: with the kernel's errno (ENOSYS when unsupported).
    """
    if _SYS_OPENAT2 is None:
        raise OSError(errno.ENOSYS, 'openat2 number unknown on %s'
                      % platform.machine(), path)
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    encoded = ctypes.c_char_p(os.fsencode(path))
    # RESOLVE_IN_ROOT may answer EAGAIN when a rename races a ".." step.
    for _attempt in range(8):
        fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(dirfd),
                           encoded, ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            break
    raise OSError(err, os.strerror(err), name or path)
