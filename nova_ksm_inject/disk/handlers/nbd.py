"""``nbd``: the image on a /dev/nbdN device through qemu-nbd, kernel-mounted.

Copy-on-write for qcow2 overlays where the host has the nbd driver
(``modprobe nbd max_part=16``). The lessons of nova's nbd driver are built
in:

* a device is free when the kernel says so (no ``/sys/block/nbdN/pid``),
  and claimed with an external lock per device (oslo.concurrency) so two
  processes never pick the same one; fcntl locks are per process, so a
  process-wide set guards threads too;
* a device whose ``pid`` names a dead process is stale: once locked, it is
  disconnected and reused;
* the device list is read from sysfs, never a hard-coded count;
* ``qemu-nbd --connect`` gets the whole backing chain spelled out with
  ``--image-opts`` (:func:`image_opts`): every layer's driver stated, a
  ``backing`` for every qcow2 layer (none below the last), and each file
  by descriptor, so qemu neither probes a format nor resolves a backing
  name (relative names resolve against a different directory for
  ``/proc/PID/fd/N`` than for the path inspection checked);
* the device is used only once sysfs shows it connected with a size,
  bounded by ``timeout_nbd``;
* partitions are the kernel's ``nbdNpM`` (needs ``max_part``);
* the device is disconnected on every path out (journal kind ``nbd``).

qemu-nbd itself runs as root (it drives /dev/nbdN), under the helper CPU
and address-space limits; it is not sandboxed.
"""

import contextlib
import os
import re
import shutil
import threading
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils
from nova_ksm_inject.disk import export
from nova_ksm_inject.disk import mount
from nova_ksm_inject.disk import sandbox
from nova_ksm_inject.disk.files import host
from nova_ksm_inject.disk.handlers import base

LOG = logging.getLogger(__name__)

MODPROBE = 'modprobe nbd max_part=16'
_DEVICE_NAME = re.compile(r'^nbd(\d+)$')
POLL_INTERVAL = 0.05

# Devices this process holds: an fcntl lock taken twice in one process
# succeeds twice, and closing either copy drops both.
_claimed = set()
_claimed_guard = threading.Lock()


def image_opts(image, fds):
    """The ``qemu-nbd --image-opts`` string opening ``image`` and its
    backing chain, the files being ``fds`` (top first, then each backing
    layer) as the command inherits them (``/proc/self/fd/N``).

    The tree is :func:`.export.layer_spec`'s, nested, in QemuOpts' dotted
    keys. ``backing=`` (empty) is the dotted spelling of JSON null: the
    bottom qcow2 layer opens no backing file (QEMU 7.2 warns it prefers
    null, which the dotted syntax cannot spell; were that ever removed,
    qemu-nbd would fail to open, never open a file named in a header).
    """
    files = ['/proc/self/fd/%d' % fd for fd in fds]
    formats = [image.format] + [fmt for _src, fmt in image.layer_paths()]
    spec = None
    # Bottom up, each layer holding the one below as its backing.
    for depth in reversed(range(len(files))):
        spec = export.layer_spec('backing%d' % depth if depth else 'top',
                                 files[depth], formats[depth], spec,
                                 read_only=depth > 0)
    return ','.join(_dotted(spec))


def _dotted(spec, prefix=''):
    for key, value in spec.items():
        if isinstance(value, dict):
            yield from _dotted(value, prefix + key + '.')
        elif value is None:
            yield prefix + key + '='
        elif isinstance(value, bool):
            yield '%s%s=%s' % (prefix, key, 'on' if value else 'off')
        else:
            yield '%s%s=%s' % (prefix, key, str(value).replace(',', ',,'))


def _open_layers(image, stack):
    """Each layer of ``image`` opened read-only (top first), closed with
    ``stack``: qemu-nbd inherits them and reopens each with the access it
    needs (``/proc/self/fd/N``), no host path resolved again."""
    return [stack.enter_context(sandbox.opened(source)) for source in
            [image.tool_path] + [s for s, _f in image.layer_paths()]]


class NbdHandler(base.ImageHandler):
    """Mount an image through qemu-nbd and the kernel's nbd driver.

    ``sysfs``, ``dev``, ``sleep`` and ``clock`` are for tests (a fake
    sysfs tree and a fake clock); the entry point passes only ``conf``.
    """

    cow = True
    formats = frozenset(['raw', 'qcow2'])
    can_inspect = False
    kernel_mount = True

    def __init__(self, conf, sysfs='/sys', dev='/dev', sleep=time.sleep,
                 clock=time.monotonic):
        super().__init__(conf)
        self.sysfs = sysfs
        self.dev = dev
        self.sleep = sleep
        self.clock = clock

    # -- what the kernel says ---------------------------------------------

    def _param(self, name):
        path = os.path.join(self.sysfs, 'module', 'nbd', 'parameters', name)
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def devices(self):
        """The nbd devices the kernel created, in numeric order."""
        try:
            names = os.listdir(os.path.join(self.sysfs, 'block'))
        except FileNotFoundError:
            return []
        found = sorted((int(m.group(1)), n) for n in names
                       if (m := _DEVICE_NAME.match(n)))
        return [n for _num, n in found
                if os.path.exists(os.path.join(self.dev, n))]

    def _read(self, name, attr):
        try:
            with open(os.path.join(self.sysfs, 'block', name, attr)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def connected_pid(self, name):
        """The pid serving ``name``, or None when it is not connected."""
        text = self._read(name, 'pid')
        return int(text) if text and text.isdigit() else None

    def _ready(self, name):
        size = self._read(name, 'size')
        return self.connected_pid(name) is not None and \
            size is not None and size.isdigit() and int(size) > 0

    # -- the handler contract ---------------------------------------------

    def check_host(self):
        if not shutil.which('qemu-nbd'):
            raise exception.HandlerUnavailable(
                reason='qemu-nbd not found; install the Debian package '
                       'qemu-utils')
        if self.devices():
            return
        if not os.path.isdir(os.path.join(self.sysfs, 'module', 'nbd')):
            raise exception.HandlerUnavailable(
                reason='no nbd driver: %s missing; load it with %s'
                       % (os.path.join(self.dev, 'nbd0'), MODPROBE))
        raise exception.HandlerUnavailable(
            reason='the nbd driver has no devices (nbds_max=%s); reload it '
                   'with modprobe nbd nbds_max=16 max_part=16'
                   % self._param('nbds_max'))

    def mount(self, image, partition, journal):
        if partition > 0 and self._param('max_part') == 0:
            raise exception.HandlerFailed(
                reason='the nbd driver was loaded without partitions '
                       '(max_part=0) and %s needs partition %d; reload it '
                       'with %s' % (image.path, partition, MODPROBE))
        mountpoint = journal.make_dir('root')
        name = self._claim_device(journal)
        device = self._connect(image, name, journal)
        if partition > 0:
            device = self._wait_partition(image, name, partition)
        mount.mount_device(device, mountpoint, journal)
        files = host.HostRootFiles(mountpoint)
        journal.callback(files.close)
        return files

    # -- claiming a device --------------------------------------------------

    def _lock(self, name):
        return lockutils.external_lock(
            name, lock_file_prefix='nova-ksm-inject-',
            lock_path=os.path.join(self.conf.inject.state_dir, 'locks'))

    def _claim_device(self, journal):
        """Lock a free device; its release is on ``journal``."""
        names = self.devices()
        LOG.debug('nbd devices on this host: %d (nbds_max=%s)', len(names),
                  self._param('nbds_max'))
        for name in names:
            pid = self.connected_pid(name)
            if pid is not None and procfs.process_matches(pid):
                continue  # in use: skip without touching its lock
            lock = self._lock(name)
            if not self._acquire(name, lock):
                continue
            if self._usable(name):
                journal.callback(self._release, name, lock)
                LOG.debug('Claimed /dev/%s', name)
                return name
            self._release(name, lock)
        raise exception.HandlerFailed(
            reason='all %d nbd devices are in use; wait, or load more with '
                   'modprobe nbd nbds_max=N max_part=16' % len(names))

    @staticmethod
    def _acquire(name, lock):
        with _claimed_guard:
            if name in _claimed or not lock.acquire(blocking=False):
                return False
            _claimed.add(name)
            return True

    @staticmethod
    def _release(name, lock):
        with _claimed_guard:
            lock.release()
            _claimed.discard(name)

    def _usable(self, name):
        """Under the lock: free, or stale (its server is dead) and reset."""
        pid = self.connected_pid(name)
        if pid is None:
            return True
        if procfs.process_matches(pid):
            return False  # connected by something outside our locks
        LOG.warning('/dev/%s is connected to dead process %d (stale); '
                    'disconnecting it', name, pid)
        self._disconnect(os.path.join(self.dev, name), name)
        return self.connected_pid(name) is None

    # -- connecting -----------------------------------------------------------

    def _connect(self, image, name, journal):
        device = os.path.join(self.dev, name)
        # The work dir names this connection in qemu-nbd's command line
        # (the export description), for _record_if_ours.
        marker = journal.work_dir
        try:
            with contextlib.ExitStack() as stack:
                fds = _open_layers(image, stack)
                utils.execute(
                    'qemu-nbd', '--connect', device, '--description', marker,
                    '--image-opts', image_opts(image, fds), pass_fds=fds,
                    preexec_fn=utils.ResourceLimits(
                        cpu_time=self.conf.inject.helper_cpu_time,
                        address_space=self.conf.inject.helper_address_space),
                    action='connecting %s to %s' % (image.path, device))
        except exception.CommandFailed as err:
            self._record_if_ours(marker, name, device, journal)
            raise exception.HandlerFailed(
                reason='qemu-nbd could not connect %s to %s: %s'
                       % (image.path, device, err)) from err
        self._record_if_ours(marker, name, device, journal)
        self._wait_connected(image, name, device)
        LOG.info('Connected %s (%s) to %s', image.path, image.format, device)
        return device

    def _record_if_ours(self, marker, name, device, journal):
        # A failed qemu-nbd may still have connected the device; disconnect
        # it unless its server is somebody else's.
        pid = self.connected_pid(name)
        if pid is not None and not procfs.process_matches(pid, marker):
            return
        journal.push('nbd', undo_now=lambda: self._disconnect(device, name),
                     device=device)

    def _wait_connected(self, image, name, device):
        timeout = self.conf.timeout_nbd
        deadline = self.clock() + timeout
        while not self._ready(name):
            if self.clock() >= deadline:
                raise exception.HandlerFailed(
                    reason='%s was not connected to %s within %d s '
                           '(timeout_nbd); raise timeout_nbd on a loaded '
                           'host' % (device, image.path, timeout))
            self.sleep(POLL_INTERVAL)

    def _wait_partition(self, image, name, partition):
        part = '%sp%d' % (name, partition)
        device = os.path.join(self.dev, part)
        timeout = self.conf.inject.device_timeout
        deadline = self.clock() + timeout
        while not (os.path.exists(os.path.join(self.sysfs, 'block', name,
                                               part))
                   and os.path.exists(device)):
            if self.clock() >= deadline:
                found = sorted(p for p in os.listdir(
                    os.path.join(self.sysfs, 'block', name))
                    if p.startswith(name + 'p')) or ['none']
                raise exception.HandlerFailed(
                    reason='partition %d of %s did not appear as %s within '
                           '%d s (partitions: %s); check the partition '
                           'number' % (partition, image.path, device,
                                       timeout, ', '.join(found)))
            self.sleep(POLL_INTERVAL)
        return device

    def _disconnect(self, device, name):
        if self.connected_pid(name) is None:
            return
        utils.execute('qemu-nbd', '--disconnect', device,
                      action='disconnecting %s' % device)
        deadline = self.clock() + self.conf.timeout_nbd
        while self.connected_pid(name) is not None:
            if self.clock() >= deadline:
                LOG.warning('%s still shows a server after qemu-nbd '
                            '--disconnect', device)
                return
            self.sleep(POLL_INTERVAL)
        LOG.info('Disconnected %s', device)
