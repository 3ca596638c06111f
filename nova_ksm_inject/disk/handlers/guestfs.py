"""``guestfs``: the image opened by a libguestfs appliance.

The guest filesystem is parsed by the appliance's kernel, inside a
throw-away VM, never by the host kernel: the handler for untrusted images,
and the only one that can inspect an image for its root (partition -1).
It is also the slowest (an appliance boot per image: 11-15 s under TCG).

Two interfaces ([guestfs] interface):

* the Python binding (Debian ``python3-guestfs``, not on PyPI): every file
  operation runs in the appliance through
  :class:`~nova_ksm_inject.disk.guestfs_files.GuestfsFiles`;
* the ``guestmount`` command: a FUSE mount of the guest, written through
  :class:`~nova_ksm_inject.disk.guestpath.HostRootFiles`; after unmounting,
  the journal waits for the guestmount process to exit (it flushes and
  stops the appliance first) before the image counts as free.

Every drive is added with its format. The appliance launch is bounded by
[guestfs] launch_timeout: the binding's blocking ``launch()`` runs in a
thread and the appliance's qemu is killed when the time is up.
"""

import functools
import os
import shutil
import signal
import subprocess
import threading
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import guestfs_files
from nova_ksm_inject.disk import guestpath
from nova_ksm_inject.disk.handlers import base

LOG = logging.getLogger(__name__)

#: Seconds a launch thread gets to return once its qemu was killed.
KILL_GRACE = 10
TIMEOUT_HINT = ('on hosts whose KVM the appliance cannot use set [guestfs] '
                'backend_settings = force_tcg, or raise [guestfs] '
                'launch_timeout')


@functools.lru_cache(maxsize=1)
def load_binding():
    """The ``guestfs`` Python module, or None when it is not importable."""
    try:
        import guestfs
    except ImportError as err:
        LOG.debug('libguestfs Python binding not importable: %s', err)
        return None
    return guestfs


def kill_appliances(parent, image_path):
    """SIGKILL the qemu children of ``parent`` that opened ``image_path``.

    libguestfs canonicalises a drive's path (``/proc/<pid>/fd/<n>``
    becomes the file's real path) before it starts qemu: look for that.

    :returns: the pids killed.
    """
    # libguestfs doubles commas in the -drive file= value.
    needle = 'file=%s,' % image_path.replace(',', ',,')
    killed = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv = f.read().decode(errors='replace').split('\0')
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and 'qemu' in os.path.basename(argv[0]) and \
                any(needle in arg for arg in argv):
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
    return killed


class _Appliance:
    """A libguestfs handle and the state of its launch."""

    def __init__(self, handle, image):
        self.handle = handle
        self.image = image
        self.launched = False
        self.launch_returned = False
        self.abandoned = False
        self.guard = threading.Lock()

    def close(self):
        """Journal step: sync and stop the appliance, close the handle."""
        with self.guard:
            if self.abandoned:
                return  # the launch thread closes it when launch returns
            try:
                if self.launched:
                    self.handle.shutdown()  # syncs and waits for qemu
            except RuntimeError as err:
                raise exception.InjectionFailed(
                    what='the final sync', image=self.image.path,
                    reason='libguestfs shutdown failed: %s' % err) from err
            finally:
                self.handle.close()
                LOG.debug('Closed the libguestfs handle of %s',
                          self.image.path)


class GuestfsHandler(base.ImageHandler):
    """Mount an image inside a libguestfs appliance."""

    cow = True
    formats = frozenset(['raw', 'qcow2'])
    can_inspect = True
    kernel_mount = False

    def interface(self):
        """'binding' or 'guestmount', as configured and installed.

        :raises HandlerUnavailable: neither is usable.
        """
        choice = self.conf.guestfs.interface
        if choice in ('auto', 'binding') and load_binding() is not None:
            return 'binding'
        if choice == 'binding':
            raise exception.HandlerUnavailable(
                reason='the libguestfs Python binding is not importable; '
                       'install the Debian package python3-guestfs (in a '
                       'venv, link it with tools/link-guestfs) or set '
                       '[guestfs] interface = auto')
        if shutil.which('guestmount') and shutil.which('guestunmount'):
            return 'guestmount'
        raise exception.HandlerUnavailable(
            reason='libguestfs is not installed: no Python binding and no '
                   'guestmount; install the Debian packages python3-guestfs '
                   'or guestmount')

    def check_host(self):
        self.interface()

    def mount(self, image, partition, journal):
        if self.interface() == 'binding':
            return self._mount_binding(image, partition, journal)
        return self._mount_guestmount(image, partition, journal)

    # -- Python binding ---------------------------------------------------

    def _mount_binding(self, image, partition, journal):
        handle = load_binding().GuestFS(python_return_dict=True)
        appliance = _Appliance(handle, image)
        journal.callback(appliance.close)
        handle.set_backend(self.conf.guestfs.backend)
        if self.conf.guestfs.backend_settings:
            handle.set_backend_settings(
                list(self.conf.guestfs.backend_settings))
        if self.conf.guestfs.debug:
            handle.set_trace(True)
            handle.set_verbose(True)
        handle.add_drive_opts(image.tool_path, format=image.format,
                              readonly=False)
        self._launch(appliance)
        guestfs_files.mount_guest(handle, image, partition)
        return guestfs_files.GuestfsFiles(handle, self.conf)

    def _launch(self, appliance):
        timeout = self.conf.guestfs.launch_timeout
        errors = []

        def launch():
            try:
                appliance.handle.launch()
            except RuntimeError as err:
                errors.append(err)
            with appliance.guard:
                appliance.launched = not errors
                appliance.launch_returned = True
                if appliance.abandoned:
                    appliance.handle.close()

        started = time.monotonic()
        thread = threading.Thread(target=launch, name='guestfs-launch',
                                  daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self._stop_launch(appliance, thread)
            raise exception.HandlerFailed(
                reason='the libguestfs appliance for %s did not come up '
                       'within %s s; %s' % (appliance.image.path, timeout,
                                            TIMEOUT_HINT))
        if errors:
            raise exception.HandlerFailed(
                reason='the libguestfs appliance for %s failed to launch: '
                       '%s; run libguestfs-test-tool to see why'
                       % (appliance.image.path,
                          (str(errors[0]).splitlines() or ['?'])[0]))
        LOG.info('libguestfs appliance for %s up in %.1f s',
                 appliance.image.path, time.monotonic() - started)

    @staticmethod
    def _stop_launch(appliance, thread):
        # qemu may not exist yet (supermin still building the appliance):
        # keep killing what appears until launch() gives up.
        killed = []
        deadline = time.monotonic() + KILL_GRACE
        while thread.is_alive() and time.monotonic() < deadline:
            killed += kill_appliances(os.getpid(), appliance.image.path)
            thread.join(0.2)
        LOG.warning('libguestfs launch for %s timed out; killed qemu %s',
                    appliance.image.path, killed or '(none found)')
        with appliance.guard:
            if not appliance.launch_returned:
                # launch() holds the handle; the thread closes it later.
                appliance.abandoned = True

    # -- guestmount command -------------------------------------------------

    def _mount_guestmount(self, image, partition, journal):
        mountpoint = journal.make_dir('root')
        # Not inside the mountpoint: rmtree must never walk into the guest.
        workdir = journal.make_dir('guestmount')
        pidfile = os.path.join(workdir, 'guestmount.pid')
        cmd = ['--format=%s' % image.format, '-a', image.tool_path]
        if partition == base.PARTITION_INSPECT:
            cmd.append('-i')
        else:
            cmd += ['-m', '/dev/sda%s' % (partition or '')]
        cmd += ['--rw', '--pid-file', pidfile]
        if self.conf.guestfs.debug:
            cmd += ['-v', '-x']
        try:
            self._run_guestmount(image, cmd + [mountpoint])
        finally:
            if os.path.ismount(mountpoint):
                journal.push('guestmount', path=mountpoint,
                             pid=read_pid(pidfile), marker=mountpoint)
        LOG.info('guestmount mounted %s at %s', image.path, mountpoint)
        files = guestpath.HostRootFiles(mountpoint, self.conf)
        journal.callback(files.close)
        return files

    def _environment(self):
        env = dict(os.environ, LIBGUESTFS_BACKEND=self.conf.guestfs.backend)
        if self.conf.guestfs.backend_settings:
            env['LIBGUESTFS_BACKEND_SETTINGS'] = ':'.join(
                self.conf.guestfs.backend_settings)
        return env

    def _run_guestmount(self, image, args):
        timeout = self.conf.guestfs.launch_timeout
        launched = []
        try:
            utils.execute('guestmount', *args,
                          preexec_fn=utils.ResourceLimits(
                              cpu_time=self.conf.guestfs.guestmount_cpu_time,
                              address_space=(
                                  self.conf.guestfs.guestmount_address_space)),
                          env_variables=self._environment(), timeout=timeout,
                          on_execute=launched.append,
                          action='mounting %s with guestmount' % image.path)
        except subprocess.TimeoutExpired as err:
            for proc in launched:
                kill_appliances(proc.pid, image.path)
                proc.kill()
                proc.wait()
            raise exception.HandlerFailed(
                reason='guestmount of %s did not come up within %d s; %s'
                       % (image.path, timeout, TIMEOUT_HINT)) from err
        except exception.CommandFailed as err:
            raise exception.HandlerFailed(
                reason='guestmount could not mount %s: %s'
                       % (image.path, err)) from err


def read_pid(pidfile):
    """The pid guestmount wrote, or None."""
    try:
        with open(pidfile) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None
