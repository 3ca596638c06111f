"""A guest image as a raw disk file: qemu-storage-daemon's FUSE export.

Shared by the ``fuse2fs`` handler (fuse2fs reads the export) and the
``qsd`` handler (the host kernel loop-mounts it). qemu-storage-daemon runs
sandboxed and unprivileged (:mod:`nova_ksm_inject.disk.sandbox`): every
layer of the backing chain that ``disk/image.py`` checked is handed to it
as a descriptor, with an explicit driver, the top one writable and the
backing ones read-only, and every qcow2 layer gets ``backing`` set (null
at the bottom), so qemu never probes a format, never follows a backing
name from a header, and never resolves a host path: a header rewritten
after inspection (an external data file, another backing file) can only
name files the daemon's own uid may open, in a sandbox holding none.

The FUSE mount is made by the caller and handed over
(:mod:`nova_ksm_inject.disk.fuse`); the daemon is stopped through its QMP
monitor, a socketpair, and closes its monitor after its last image.
"""

import functools
import json
import os
import socket
import subprocess

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.disk import fuse
from nova_ksm_inject.disk import qmp
from nova_ksm_inject.disk import sandbox

LOG = logging.getLogger(__name__)

EXPORT_ID = 'nova-ksm-inject'
MONITOR_ID = 'nova-ksm-inject-qmp'
#: Seconds allowed to a clean stop before the daemon is killed.
STOP_TIMEOUT = 10


def layer_spec(node, path, fmt, backing, read_only):
    """``--blockdev`` JSON for one image layer with an explicit driver.

    :param backing: node name of the layer below, or None; a qcow2 layer
        always gets ``backing`` set (``null`` = none), so qemu never opens
        the backing file named in its header.
    """
    spec = {'driver': fmt, 'node-name': node, 'read-only': read_only,
            'file': {'driver': 'file', 'filename': path,
                     'read-only': read_only}}
    if fmt == 'qcow2':
        spec['backing'] = backing
    elif backing is not None:
        raise ValueError('a %s layer (%s) cannot have a backing file'
                         % (fmt, path))
    return spec


def blockdev_args(image, hand_over):
    """``--blockdev`` arguments opening ``image`` and its backing chain,
    bottom first; ``hand_over(fd)`` gives the path the daemon opens a
    descriptor by. Returns ``(args, top node name)``."""
    args, below = [], None
    layers = image.layer_paths()
    for depth, (path, fmt) in reversed(list(enumerate(layers, 1))):
        node = 'backing%d' % depth
        with sandbox.opened(path) as fd:
            args += ['--blockdev', json.dumps(layer_spec(
                node, hand_over(fd), fmt, below, read_only=True))]
        below = node
    with sandbox.opened(image.tool_path) as fd:
        args += ['--blockdev', json.dumps(layer_spec(
            'top', hand_over(fd), image.format, below, read_only=False))]
    return args, 'top'


def daemon_command(image, box, monitor_fd):
    """The sandboxed qemu-storage-daemon's command line."""
    blockdevs, top = blockdev_args(image, box.pass_fd)
    export = {'type': 'fuse', 'id': EXPORT_ID, 'node-name': top,
              'mountpoint': '/export.raw', 'writable': True,
              'allow-other': 'off'}
    monitor = box.pass_fd(monitor_fd).rsplit('/', 1)[1]
    return ['qemu-storage-daemon', *blockdevs, '--export', json.dumps(export),
            '--chardev', 'socket,id=%s,fd=%s' % (MONITOR_ID, monitor),
            '--monitor', 'chardev=%s' % MONITOR_ID]


def export_image(conf, image, workdir, ids, journal, share=False):
    """Export ``image`` as a raw file in ``workdir``; return its path.

    :param ids: ``(uid, gid)`` the daemon runs as
        (:func:`sandbox.helper_ids`).
    :param share: (root) let a helper of another uid, or the kernel's
        loop driver, open the export.
    :raises HandlerFailed: the export did not come up; the journal holds
        what to undo.
    """
    export = os.path.join(workdir, 'export.raw')
    with open(export, 'x'):
        pass
    # Recorded first: a caller killed right after the mount leaves it to
    # the sweep (unmounting what is not mounted is a no-op).
    journal.push('fuse', path=export)
    fuse_fd = fuse.mount(export, 'qsd', share=share)
    monitor, theirs = socket.socketpair()
    box = sandbox.Sandbox(conf, workdir, *ids)
    try:
        cmd = daemon_command(image, box, theirs.fileno())
        box.data_file(b'', '/export.raw', 0o600)
        box.fuse_server(fuse_fd)
        proc = box.start(*cmd)
    finally:
        os.close(fuse_fd)
        theirs.close()
    journal.push('process', undo_now=functools.partial(
        stop_daemon, proc, monitor, export), pid=proc.pid, marker=workdir,
        timeout=STOP_TIMEOUT)

    def ready():
        return os.stat(export).st_size == image.virtual_size
    if not sandbox.wait_until(ready, proc, conf.inject.device_timeout):
        raise exception.HandlerFailed(
            reason='qemu-storage-daemon could not export %s: %s'
                   % (image.path, sandbox.last_words(proc)))
    LOG.info('qemu-storage-daemon %d exports %s (%s, %d backing layers)',
             proc.pid, image.path, image.format, len(image.backing_chain))
    return export


def stop_daemon(proc, monitor, export=None):
    """Unmount the export, then QMP ``quit`` (qemu flushes and closes
    every image) and reap.

    Unmounted first, libfuse finds the connection gone when qemu closes
    the export and does not run fusermount3 (in the sandbox, the stand-in:
    a Python start, 10 ms) to unmount it; the guest data is in qemu, which
    flushes it on quit.
    """
    if export is not None:
        fuse.unmount(export)
    if proc.poll() is None:
        try:
            with qmp.QmpClient('qemu-storage-daemon %d' % proc.pid,
                               timeout=STOP_TIMEOUT, sock=monitor) as client:
                client.quit()
        except (OSError, qmp.QmpError) as err:
            LOG.warning('qemu-storage-daemon %d did not quit through QMP '
                        '(%s); killing it', proc.pid, err)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    sandbox.kill(proc)
    proc.stdout.close()
    monitor.close()
