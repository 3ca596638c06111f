"""FUSE mounts made by the caller and handed to a sandboxed server.

A FUSE server (qemu-storage-daemon's export, fuse2fs) normally mounts
itself: libfuse runs the setuid ``fusermount3``, which mounts
``/dev/fuse`` on the mountpoint and passes the descriptor back over the
socket named by ``_FUSE_COMMFD``. A sandboxed server cannot do that
(bubblewrap sets no_new_privs, so setuid does nothing), and a mount made
inside the sandbox's user namespace would translate every owner through
it, so guest uid 1000 could not be written. So the caller mounts, in the
host's namespaces, and gives the server the descriptor
(:mod:`nova_ksm_inject.disk.sandbox`):

* an unprivileged caller runs ``fusermount3`` itself, speaking the same
  ``_FUSE_COMMFD`` protocol libfuse speaks: only the caller's uid may use
  the mount;
* root opens ``/dev/fuse`` and mounts it with ``mount -i -t fuse.TYPE -o
  fd=N,...`` (``user_id=0``); ``share=True`` adds ``allow_other`` for an
  export a sandboxed helper of another uid must open (it lives in the
  0700 state directory, so no one else reaches it).

:func:`unmount` ends a mount; its server then sees the end of the
connection and exits (fuse2fs flushes and closes the filesystem first).
"""

import os
import socket
import stat
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils

LOG = logging.getLogger(__name__)

FUSERMOUNT = 'fusermount3'
# A busy mount is unmounted again every BUSY_SLEEP s for this long.
BUSY_SECONDS = 3.0
BUSY_SLEEP = 0.1


def _failed(mountpoint, reason):
    return exception.HandlerFailed(
        reason='could not mount FUSE on %s: %s' % (mountpoint, reason))


def mount(mountpoint, fstype, share=False):
    """Mount a FUSE filesystem at ``mountpoint``; return ``/dev/fuse`` fd.

    :param fstype: the subtype shown in /proc/mounts (``fuse.TYPE``).
    :param share: (root only) let a sandboxed helper of another uid open
        the mount too.
    :raises HandlerFailed: the mount failed.
    """
    if os.geteuid() == 0:
        return _mount_as_root(mountpoint, fstype, share)
    return _mount_with_fusermount(mountpoint, fstype)


def _rootmode(mountpoint):
    return '%o' % stat.S_IFMT(os.lstat(mountpoint).st_mode)


def _mount_as_root(mountpoint, fstype, share):
    fd = os.open('/dev/fuse', os.O_RDWR | os.O_CLOEXEC)
    options = ['fd=%d' % fd, 'rootmode=%s' % _rootmode(mountpoint),
               'user_id=0', 'group_id=0', 'nosuid', 'nodev', 'noexec']
    if share:
        options += ['allow_other', 'default_permissions']
    try:
        utils.execute('mount', '-i', '-t', 'fuse.' + fstype, '-o',
                      ','.join(options), fstype, mountpoint,
                      pass_fds=(fd,), action='mounting FUSE on %s'
                      % mountpoint)
    except exception.CommandFailed as err:
        os.close(fd)
        raise _failed(mountpoint, err) from err
    return fd


def _mount_with_fusermount(mountpoint, fstype):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = {'_FUSE_COMMFD': str(theirs.fileno()),
               'PATH': '/usr/bin:/bin'}
        try:
            utils.execute(FUSERMOUNT, '-o',
                          'nosuid,nodev,noexec,fsname=%s,subtype=%s'
                          % (fstype, fstype), '--', mountpoint,
                          env_variables=env, pass_fds=(theirs.fileno(),),
                          action='mounting FUSE on %s' % mountpoint)
        except exception.CommandFailed as err:
            raise _failed(mountpoint, err) from err
        theirs.close()
        ours.settimeout(5)
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
    if not fds:
        raise _failed(mountpoint, '%s passed no descriptor' % FUSERMOUNT)
    os.set_inheritable(fds[0], False)
    return fds[0]


def is_mounted(mountpoint):
    """True when ``mountpoint`` is a mount, a dead FUSE one included
    (``os.path.ismount`` says False when its server died: ENOTCONN)."""
    return mountpoint in procfs.mount_points()


def unmount(mountpoint, lazy=False, sleep=time.sleep):
    """Unmount ``mountpoint`` (a no-op when it is not mounted).

    A mount that is still busy the moment its last file was closed (the
    kernel can drop a closed file's last reference a little later, as
    io_uring does from a worker) is tried again for up to
    :data:`BUSY_SECONDS` before the unmount fails; a lazy one never is.
    """
    if not is_mounted(mountpoint):
        return
    if os.geteuid() == 0:
        cmd = ['umount'] + (['--lazy'] if lazy else []) + [mountpoint]
    else:
        cmd = [FUSERMOUNT, '-u'] + (['-z'] if lazy else []) + [mountpoint]
    tries = 1 if lazy else int(BUSY_SECONDS / BUSY_SLEEP) + 1
    for left in range(tries - 1, -1, -1):
        try:
            utils.execute(*cmd, action='unmounting FUSE at %s' % mountpoint)
            break
        except exception.CommandFailed as err:
            if not left or 'busy' not in str(err).lower():
                raise
            LOG.debug('FUSE at %s is still busy; unmounting it again',
                      mountpoint)
            sleep(BUSY_SLEEP)
    LOG.debug('Unmounted FUSE at %s', mountpoint)
