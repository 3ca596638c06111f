"""Helpers that parse tenant data run without privilege, in a sandbox.

qemu-storage-daemon, fuse2fs and partx read bytes a tenant chose. Each
runs under bubblewrap (``bwrap``): new user, mount, pid, network, IPC and
UTS namespaces (no network at all), no capabilities, no_new_privs, a fresh
session, an empty environment, ``/usr`` read-only, a private ``/proc``,
``/dev`` with only the usual null/zero/random nodes (plus ``/dev/fuse``
for a FUSE server), and of the host's files none but the descriptors it
is handed (:meth:`Sandbox.pass_fd`): the image layers inspection checked
(the helper opens them as ``/proc/self/fd/N``, so no host path is
resolved twice), its FUSE connection and its QMP socket. CPU time and
address space are capped (``[inject] helper_cpu_time``,
``helper_address_space``), and the helper dies with its caller
(``--die-with-parent``).

A helper never runs as root: when the caller is root it runs as the uid
given (the image's owner), dropped by ``setpriv`` before bubblewrap
starts.

A FUSE server cannot mount from inside (see :mod:`.fuse`): the caller
mounts and the sandbox's ``fusermount3`` is replaced by
:data:`FUSERMOUNT_SHIM`, which hands libfuse (2 or 3) that descriptor
through the ``_FUSE_COMMFD`` protocol it already speaks, and does nothing
on unmount (the caller unmounts).
"""

import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils

LOG = logging.getLogger(__name__)

BWRAP = 'bwrap'
#: Environment variable naming the sandbox (found in /proc/PID/cmdline,
#: so journals can match the process).
MARKER_ENV = 'NOVA_KSM_INJECT_SANDBOX'
FUSE_FD_ENV = 'NOVA_KSM_INJECT_FUSE_FD'

#: Stands in for fusermount3 inside the sandbox (libfuse runs it when it
#: cannot mount itself, which it never can there). Python without site
#: and with the C socket module only: it starts in about 10 ms. (One
#: word of flags: the kernel passes the rest of a #! line as one.)
FUSERMOUNT_SHIM = b'''#!/usr/bin/python3 -IS
import _socket, os, sys
if "-u" in sys.argv[1:]:
    sys.exit(0)
comm = _socket.socket(fileno=int(os.environ["_FUSE_COMMFD"]))
fd = int(os.environ["%s"]).to_bytes(4, sys.byteorder)
comm.sendmsg([b"\\0"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd)])
''' % FUSE_FD_ENV.encode()

_BASE = ('--unshare-all', '--die-with-parent', '--new-session',
         '--clearenv', '--setenv', 'PATH', '/usr/bin',
         '--ro-bind', '/usr', '/usr', '--symlink', 'usr/lib', '/lib',
         '--symlink', 'usr/lib64', '/lib64', '--symlink', 'usr/bin', '/bin',
         '--symlink', 'usr/sbin', '/sbin', '--proc', '/proc', '--dev', '/dev',
         '--tmpfs', '/tmp', '--chdir', '/')


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def work_dir(journal, name):
    """A work directory on ``journal`` whose sandboxes all die with it.

    Sandboxes name it in their command line. Its record stops any left
    (a caller killed while bubblewrap was still setting up can leave
    one orphaned), and it is pushed before any starts, so the sweep finds
    them whatever instant the caller died at.
    """
    path = journal.make_dir(name)
    journal.push('process', marker=path, sandbox=True)
    return path


def check_available():
    """Raise HandlerUnavailable unless bubblewrap can build a sandbox (and
    root can drop to the helper's uid)."""
    if not shutil.which(BWRAP):
        raise exception.HandlerUnavailable(
            reason='bwrap not found; install the Debian package bubblewrap')
    if os.geteuid() == 0 and not shutil.which('setpriv'):
        raise exception.HandlerUnavailable(
            reason='setpriv not found; install the Debian package '
                   'util-linux')


def check_fuse():
    """Raise HandlerUnavailable unless this caller can mount FUSE."""
    if not os.path.exists('/dev/fuse'):
        raise exception.HandlerUnavailable(
            reason='no /dev/fuse: the fuse driver is not loaded; run '
                   'modprobe fuse')
    if os.geteuid() != 0 and not shutil.which('fusermount3'):
        raise exception.HandlerUnavailable(
            reason='fusermount3 not found; install the Debian package fuse3')


class _Limits:
    """preexec_fn: resource limits, and death with the caller (bwrap's
    --die-with-parent covers the helper, not bwrap itself)."""

    def __init__(self, limits):
        self.limits = limits

    def __call__(self):
        self.limits()
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def drop_to(uid, gid):
    """The command prefix that runs the rest as ``uid``:``gid``, with no
    supplementary groups (root only). ``setpriv`` is started by uid 0
    with root's full set even from the privsep daemon, whose own reduced
    set could not change uid; it sets the death signal again after the
    change, which clears it."""
    return ['setpriv', '--reuid', str(uid), '--regid', str(gid),
            '--clear-groups', '--pdeathsig', 'KILL', '--']


class Sandbox:
    """The bubblewrap command line of one helper.

    :param marker: a path naming the injection (its work dir), put in the
        command line so a journal can recognise the process.
    :param uid: who the helper runs as when the caller is root (never 0).
    """

    def __init__(self, conf, marker, uid=None, gid=None):
        if os.geteuid() == 0 and not uid:
            raise ValueError('a sandboxed helper never runs as root')
        self.marker = marker
        self._args = ['--setenv', MARKER_ENV, marker]
        self._fds = []
        self._preexec = _Limits(utils.ResourceLimits(
            cpu_time=conf.inject.helper_cpu_time,
            address_space=conf.inject.helper_address_space))
        self._prefix = (drop_to(uid, gid if gid is not None else uid)
                        if os.geteuid() == 0 else [])

    def _keep(self, fd):
        self._fds.append(fd)
        return str(fd)

    def pass_fd(self, fd):
        """Hand the helper a copy of ``fd``; the path it opens it by.

        The helper reopens the very inode (``/proc/self/fd/N`` of its
        own, sandboxed /proc): no host path is resolved again, by it or by
        bubblewrap, and its own uid's permissions apply.
        """
        return '/proc/self/fd/%s' % self._keep(os.dup(fd))

    def directory(self, dest):
        """An empty directory at ``dest`` (a mountpoint for the helper)."""
        self._args += ['--dir', dest]

    def data_file(self, data, dest, mode=0o644):
        """A read-only file at ``dest`` holding ``data`` (< 64 KiB)."""
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        self._args += ['--perms', '%o' % mode, '--ro-bind-data',
                       self._keep(read), dest]

    def fuse_server(self, fuse_fd):
        """Let the helper serve the FUSE mount whose descriptor is given."""
        self._args += ['--dev-bind', '/dev/fuse', '/dev/fuse', '--setenv',
                       FUSE_FD_ENV, self._keep(os.dup(fuse_fd))]
        self.data_file(FUSERMOUNT_SHIM, '/usr/bin/fusermount3', 0o755)

    def command(self, *cmd):
        return [*self._prefix, BWRAP, *_BASE, *self._args, '--', *cmd]

    def close(self):
        """Close our copies of the descriptors handed over."""
        while self._fds:
            os.close(self._fds.pop())

    def start(self, *cmd):
        """Start ``cmd`` in the sandbox; return the ``Popen`` (bwrap)."""
        argv = self.command(*cmd)
        LOG.debug('Starting sandboxed %s', ' '.join(cmd))
        try:
            # fuse2fs reports on stdout, qemu on stderr: one pipe for both.
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, pass_fds=self._fds,
                preexec_fn=self._preexec)
        except FileNotFoundError as err:
            raise exception.ToolMissing(tool=BWRAP, package='bubblewrap',
                                        action='starting %s' % cmd[0]) \
                from err
        finally:
            self.close()

    def run(self, *cmd, action):
        """Run ``cmd`` in the sandbox to its end; ``(stdout, stderr)``."""
        try:
            return utils.execute(*self.command(*cmd), action=action,
                                 pass_fds=self._fds,
                                 preexec_fn=self._preexec)
        finally:
            self.close()


class opened:
    """A read-only descriptor of ``path``, closed on exit (a held
    image's ``/proc/<pid>/fd/<n>`` reopens the very inode)."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def __enter__(self):
        return self.fd

    def __exit__(self, *exc):
        os.close(self.fd)


def helper_ids(path, conf, writes=True, name=None):
    """``(uid, gid)`` a helper working on ``path`` runs as.

    The caller's own when it is not root; for root, the file's owner; for
    root's own file, ``[inject] helper_user`` if the helper only reads.

    :param name: the file's name for messages (``path`` may be a
        ``/proc/<pid>/fd/<n>`` link).
    :raises HandlerFailed: root's file, and the helper would write it.
    """
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    info = os.stat(path)
    if info.st_uid != 0:
        return info.st_uid, info.st_gid
    if writes:
        raise exception.HandlerFailed(
            reason='%s belongs to root, and the helpers that write it never '
                   'run as root; give the image to the user nova-compute '
                   'runs as (chown nova), or use another handler'
                   % (name or path))
    user = pwd.getpwnam(conf.inject.helper_user)
    return user.pw_uid, user.pw_gid


def kill(proc):
    """Kill a sandbox (its helper dies with it) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def wait_until(ready, proc, timeout):
    """Call ``ready()`` until it is true; False when the helper died first
    or ``timeout`` ran out (the helper is then killed).

    ``ready()`` may block on a FUSE mount until its server answers, so it
    runs in a thread: killing the helper ends the connection, and with it
    any call blocked on it.
    """
    outcome = []

    def probe():
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if ready():
                    outcome.append(True)
                    return
            except OSError:
                pass
            time.sleep(0.002)
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        kill(proc)
        thread.join()
    return bool(outcome)


def last_words(proc):
    """The helper's last line of output (it is killed and reaped first);
    fuse2fs's advice to run e2fsck is not the reason."""
    kill(proc)
    lines = [line for line in os.fsdecode(proc.stdout.read()).splitlines()
             if line.strip() and 'journal is not supported' not in line
             and 'Please run e2fsck' not in line]
    proc.stdout.close()
    return lines[-1].strip() if lines else \
        'it exited with status %s and said nothing' % proc.returncode
