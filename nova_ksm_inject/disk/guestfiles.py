"""File operations on a guest filesystem, rooted at the guest's ``/``.

Injection (``inject.py``) only talks to this interface. Implementations:

* :class:`nova_ksm_inject.disk.guestpath.HostRootFiles` -- a filesystem
  mounted on the host (loop, nbd, qsd, guestmount); every path is resolved
  with openat2(RESOLVE_IN_ROOT) on file descriptors, so neither ``..`` nor
  a symlink in the image can reach outside the guest root.
* ``GuestfsFiles`` in ``handlers/guestfs.py`` -- the libguestfs API, whose
  paths resolve inside the appliance.

Paths are absolute guest paths (``/root/.ssh/authorized_keys``). Owners are
numeric ids as the guest sees them.
"""

import abc

from nova_ksm_inject import exception


class GuestFiles(metaclass=abc.ABCMeta):
    """What injection needs from a guest filesystem."""

    @abc.abstractmethod
    def exists(self, path):
        """True if ``path`` exists in the guest (symlinks resolved in root)."""

    @abc.abstractmethod
    def read(self, path):
        """Return the bytes of the guest file ``path``.

        :raises FileNotFoundError: it does not exist.
        """

    @abc.abstractmethod
    def stat(self, path):
        """Return ``(mode, uid, gid)`` of ``path`` (mode incl. file type).

        :raises FileNotFoundError: it does not exist.
        """

    @abc.abstractmethod
    def makedirs(self, path, mode=0o755, uid=0, gid=0):
        """Create ``path`` and missing parents; existing ones are kept as
        they are. New directories get ``mode`` and ``uid:gid``."""

    @abc.abstractmethod
    def write(self, path, data, mode=0o644, uid=0, gid=0, append=False):
        """Write ``data`` (bytes) to ``path``; the parent must exist.

        A new file gets ``mode`` and ``uid:gid``. With ``append`` the data
        is added at the end of an existing file, whose mode and owner are
        kept. Without it an existing file is replaced atomically (a
        temporary file in the same directory renamed over it) keeping the
        existing file's mode and owner.
        """

    @abc.abstractmethod
    def chmod(self, path, mode):
        """Set the permission bits of ``path``."""

    @abc.abstractmethod
    def chown(self, path, uid, gid):
        """Set the owner of ``path`` (numeric, guest ids)."""

    def close(self):  # noqa: B027 - optional hook, not abstract
        """Release what the implementation holds (open directory fds)."""


def validate_guest_path(path, conf):
    """Check ``path`` is a usable guest path and return it.

    Absolute, a string, no NUL byte, at most ``[inject]
    max_injected_file_path_length`` characters. Every GuestFiles
    implementation calls this before resolving anything.

    :raises GuestPathRefused: naming the rule broken.
    """
    def refused(shown, reason):
        return exception.GuestPathRefused(path=shown, reason=reason)

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
