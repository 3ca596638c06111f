"""``qsd``: qemu-storage-daemon's FUSE export of the image, mounted by loop.

qemu-storage-daemon opens the image (a qcow2 overlay or a raw file) and
exports the guest-visible disk as a plain raw file on a FUSE mount; the
kernel then loop-mounts that file (``disk/mount.py``). Writes go through
qemu's qcow2 driver into the overlay and the backing files stay read-only:
copy-on-write with the host kernel, on hosts without the nbd driver.

Every layer is opened with an explicit driver, from the backing chain that
``disk/image.py`` checked (the header's own backing name is never used), so
qemu probes nothing. The daemon starts with ``--daemonize``: its parent
exits only once the export is mounted, which makes ``utils.execute`` both
the launcher and the readiness wait. It is stopped through its QMP monitor
(``quit``, then the end of the monitor connection, which qemu closes after
its last image): ~10 ms, where waiting for a SIGTERMed daemon's pid to
vanish takes as long as init needs to reap the orphan (1.2-2 s on hosts
whose PID 1 reaps lazily).
"""

import functools
import json
import os
import shutil
import subprocess
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils
from nova_ksm_inject.disk import mount
from nova_ksm_inject.disk import qmp
from nova_ksm_inject.disk import undo
from nova_ksm_inject.disk.handlers import base

LOG = logging.getLogger(__name__)

EXPORT_ID = 'nova-ksm-inject'
MONITOR_ID = 'nova-ksm-inject-qmp'
MONITOR_SOCKET = 'qmp.sock'
#: Seconds allowed to a clean stop before SIGTERM, then SIGKILL.
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


def blockdev_args(image):
    """``--blockdev`` arguments opening ``image`` and its backing chain.

    Backing layers are read-only; only the top one (the overlay, or the
    raw image itself) is writable. Returns ``(args, top node name)``.
    """
    args, below = [], None
    # backing_chain runs from the direct backing file down: open the
    # bottom first so each layer can name the one below.
    for depth, (path, fmt) in enumerate(reversed(image.layer_paths())):
        node = 'backing%d' % depth
        args += ['--blockdev', json.dumps(layer_spec(node, path, fmt, below,
                                                     read_only=True))]
        below = node
    args += ['--blockdev', json.dumps(layer_spec('top', image.tool_path,
                                                 image.format, below,
                                                 read_only=False))]
    return args, 'top'


def daemon_command(image, workdir):
    """The qemu-storage-daemon command line, and its export file."""
    export = os.path.join(workdir, 'export.raw')
    blockdevs, top = blockdev_args(image)
    export_spec = {'type': 'fuse', 'id': EXPORT_ID, 'node-name': top,
                   'mountpoint': export, 'writable': True,
                   'allow-other': 'off'}
    # The monitor socket is named relative to the daemon's working
    # directory (the work dir): a UNIX socket path must stay under 108
    # bytes, and [inject] state_dir may be long.
    cmd = ['qemu-storage-daemon', *blockdevs,
           '--export', json.dumps(export_spec),
           '--chardev', 'socket,id=%s,path=%s,server=on,wait=off' % (
               MONITOR_ID, MONITOR_SOCKET),
           '--monitor', 'chardev=%s' % MONITOR_ID,
           '--daemonize', '--pidfile', os.path.join(workdir, 'qsd.pid')]
    return cmd, export


def read_pid(path):
    """The pid in a daemon's pid file ``path`` (qemu-storage-daemon's,
    guestmount's), or None when it is missing or empty."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def daemons_serving(export):
    """Pids of running processes whose command line names ``export``."""
    return [pid for pid in procfs.pids()
            if procfs.process_matches(pid, export)]


def stop_daemon(pid, marker, monitor, export, timeout=STOP_TIMEOUT):
    """Stop the daemon ``pid`` and wait until it has let go of the images.

    QMP ``quit`` first (clean and fast); SIGTERM then SIGKILL if the
    monitor does not answer. A FUSE mount left by a killed daemon is
    unmounted.
    """
    started = time.monotonic()
    if procfs.process_matches(pid, marker):
        try:
            with qmp.QmpClient(monitor, timeout=timeout) as client:
                client.quit()
        except (OSError, qmp.QmpError) as err:
            LOG.warning('qemu-storage-daemon %d did not quit through QMP '
                        '(%s); signalling it', pid, err)
    undo.stop_process(pid, marker, timeout=timeout)
    if os.path.ismount(export):
        utils.execute('umount', export,
                      action='unmounting the FUSE export %s' % export)
    LOG.debug('Stopped qemu-storage-daemon %d in %.3f s', pid,
              time.monotonic() - started)


class QsdHandler(base.ImageHandler):
    """Copy-on-write mount through a qemu-storage-daemon FUSE export."""

    cow = True
    formats = frozenset(['raw', 'qcow2'])
    can_inspect = False
    kernel_mount = True

    def check_host(self):
        if not shutil.which('qemu-storage-daemon'):
            raise exception.HandlerUnavailable(
                reason='qemu-storage-daemon not found; install the Debian '
                       'package qemu-system-common (QEMU 6.0 or later)')
        if not os.path.exists('/dev/fuse'):
            raise exception.HandlerUnavailable(
                reason='no /dev/fuse: the fuse driver is not loaded; run '
                       'modprobe fuse')
        mount.check_loop_available()

    def mount(self, image, partition, journal):
        if partition < 0:
            raise exception.HandlerFailed(
                reason='qsd cannot inspect %s for its root partition; give '
                       'the partition number' % image.path)
        workdir = journal.make_dir('qsd')
        cmd, export = daemon_command(image, workdir)
        # FUSE mounts over an existing file; the daemon never creates it.
        with open(export, 'x'):
            pass
        # Before the daemon: unwound after it, this unmounts a FUSE export
        # that a failed or killed daemon left (a no-op after a clean quit).
        journal.push('mount', path=export, device='qemu-storage-daemon')
        self._start(image, cmd, workdir, export, journal)
        self._wait_export(image, export)
        return mount.mount_raw_file(export, partition, journal)

    def _start(self, image, cmd, workdir, export, journal):
        timeout = self.conf.inject.device_timeout
        launched = []
        failed = True
        try:
            utils.execute(*cmd, timeout=timeout, cwd=workdir,
                          preexec_fn=utils.ResourceLimits(
                              cpu_time=self.conf.inject.helper_cpu_time,
                              address_space=(
                                  self.conf.inject.helper_address_space)),
                          on_execute=launched.append,
                          action='exporting %s with qemu-storage-daemon'
                                 % image.path)
            failed = False
        except subprocess.TimeoutExpired as err:
            for proc in launched:
                proc.kill()
                proc.wait()
            raise exception.HandlerFailed(
                reason='qemu-storage-daemon did not export %s within %d s '
                       '([inject] device_timeout); check the host load or '
                       'raise the timeout' % (image.path, timeout)) from err
        except exception.CommandFailed as err:
            raise exception.HandlerFailed(
                reason='qemu-storage-daemon could not export %s: %s'
                       % (image.path, err)) from err
        finally:
            self._record_daemons(workdir, export, journal, failed)

    @staticmethod
    def _record_daemons(workdir, export, journal, failed):
        pids = {read_pid(os.path.join(workdir, 'qsd.pid'))}
        if failed:
            # The pid file is written once the export is up: a daemon that
            # hung before that is found by its export path.
            pids.update(daemons_serving(export))
        monitor = os.path.join(workdir, MONITOR_SOCKET)
        for pid in sorted(p for p in pids if p):
            journal.push('process', undo_now=functools.partial(
                stop_daemon, pid, export, monitor, export),
                pid=pid, marker=export, timeout=STOP_TIMEOUT)
            LOG.info('qemu-storage-daemon %d exports %s', pid, export)

    def _wait_export(self, image, export):
        # --daemonize returns once the export is mounted; check it rather
        # than trust it, bounded like every device wait.
        deadline = time.monotonic() + self.conf.inject.device_timeout
        while True:
            if os.path.ismount(export) and \
                    os.stat(export).st_size == image.virtual_size:
                return
            if time.monotonic() >= deadline:
                raise exception.HandlerFailed(
                    reason='the FUSE export %s of %s did not appear within '
                           '%d s ([inject] device_timeout)'
                           % (export, image.path,
                              self.conf.inject.device_timeout))
            time.sleep(0.01)
