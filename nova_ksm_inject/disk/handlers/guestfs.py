"""``guestfs``: the image opened by a libguestfs appliance.

The guest filesystem is parsed by the appliance's kernel, inside a
throw-away VM, never by the host kernel: the handler for untrusted images,
and the only one that can inspect an image for its root (partition -1).
It is also the slowest (an appliance boot per image: 11-15 s under TCG).

Two interfaces ([guestfs] interface):

* the Python binding (Debian ``python3-guestfs``, not on PyPI): every file
  operation runs in the appliance through
  :class:`~nova_ksm_inject.disk.files.appliance.GuestfsFiles`, after
  mounting the guest there by partition or by inspection;
* the ``guestmount`` command: a FUSE mount of the guest, written through
  :class:`~nova_ksm_inject.disk.files.host.HostRootFiles`; after unmounting,
  the journal waits for the guestmount process to exit (it flushes and
  stops the appliance first) before the image counts as free.

Every drive is added with its format. The appliance launch is bounded by
[guestfs] launch_timeout: the binding's blocking ``launch()`` runs in a
thread and the appliance's qemu is killed when the time is up.
"""

import functools
import os
import shutil
import threading
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk.files import appliance as appliance_files
from nova_ksm_inject.disk.handlers import base
from nova_ksm_inject.disk.handlers import guestmount

LOG = logging.getLogger(__name__)

#: Seconds a launch thread gets to return once its qemu was killed.
KILL_GRACE = 10
TIMEOUT_HINT = guestmount.TIMEOUT_HINT


@functools.lru_cache(maxsize=1)
def load_binding():
    """The ``guestfs`` Python module, or None when it is not importable."""
    try:
        import guestfs
    except ImportError as err:
        LOG.debug('libguestfs Python binding not importable: %s', err)
        return None
    return guestfs


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


def mount_guest(handle, image, partition):
    """Mount the guest root (and, when inspecting, its other filesystems)
    at ``/`` inside the appliance."""
    if partition == base.PARTITION_INSPECT:
        _mount_inspected(handle, image)
        return
    device = '/dev/sda%s' % (partition or '')
    if partition > 0 and device not in handle.list_partitions():
        found = ', '.join(p[len('/dev/sda'):] for p in
                          handle.list_partitions()) or 'none'
        raise exception.HandlerFailed(
            reason='partition %d not found in %s (partitions: %s); set '
                   '--partition or [libvirt] inject_partition to one of '
                   'them, or 0 for a whole-disk filesystem'
                   % (partition, image.path, found))
    try:
        handle.mount(device, '/')
    except RuntimeError as err:
        raise exception.HandlerFailed(
            reason='no mountable filesystem on %s of %s (%s); choose the '
                   'partition with --partition N or inspect'
                   % (device, image.path, utils.last_line(str(err)))) from err
    LOG.info('libguestfs mounted %s of %s', device, image.path)


def _mount_inspected(handle, image):
    roots = handle.inspect_os()
    if len(roots) != 1:
        raise exception.HandlerFailed(
            reason='libguestfs inspection found %s in %s; give the root '
                   'partition number instead of inspect'
                   % ('no operating system' if not roots else
                      'several operating systems (%s)' % ', '.join(roots),
                      image.path))
    root = roots[0]
    mountpoints = handle.inspect_get_mountpoints(root)
    # Parents before children: "/" before "/boot" before "/boot/efi".
    for path, device in sorted(mountpoints.items(), key=lambda i: len(i[0])):
        try:
            handle.mount(device, path)
        except RuntimeError as err:
            if path == '/':
                raise exception.HandlerFailed(
                    reason='cannot mount the root %s of %s: %s'
                           % (device, image.path, err)) from err
            LOG.warning('Cannot mount %s at %s of %s (%s); going on without '
                        'it', device, path, image.path, err)
    LOG.info('libguestfs found %s %s on %s of %s',
             handle.inspect_get_type(root), handle.inspect_get_distro(root),
             root, image.path)


class GuestfsHandler(base.ImageHandler):
    """Mount an image inside a libguestfs appliance."""

    cow = True
    formats = frozenset(['raw', 'qcow2'])
    can_inspect = True
    kernel_mount = False
    privileged = False

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
        mount_guest(handle, image, partition)
        return appliance_files.GuestfsFiles(handle, self.conf)

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
            killed += guestmount.kill_appliances(os.getpid(),
                                                 appliance.image.path)
            thread.join(0.2)
        LOG.warning('libguestfs launch for %s timed out; killed qemu %s',
                    appliance.image.path, killed or '(none found)')
        with appliance.guard:
            if not appliance.launch_returned:
                # launch() holds the handle; the thread closes it later.
                appliance.abandoned = True

    def _mount_guestmount(self, image, partition, journal):
        return guestmount.mount(self.conf, image, partition, journal)
