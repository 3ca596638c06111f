"""Real guests for the KSM benchmark: Debian booting under a private
libvirtd, each from a qcow2 overlay of one cached disk.

:class:`RealGuestLauncher` has the interface of the synthetic
:class:`~bench.ksm_launcher.GuestLauncher`, so the same
scenario runner, sampler and metrics serve both. The private libvirtd
(:mod:`tests.lib.libvirtd`) runs on the host's real KSM; for
the ``adaptive`` policy our libvirt hook is installed in it before it
starts, so libvirt itself tells the hook (and through it the tuner) about
every guest, exactly as on a compute node. Guests run under TCG here and
KVM is not used: this VM's KVM aborts QEMU.
"""

import os
import shutil
import tempfile
import threading
import time

from oslo_log import log as logging

from bench import ksm_launcher
from bench import ksm_policies
from nova_ksm_inject.cmd import ksm as cmd_ksm
from nova_ksm_inject.ksm import processes
from tests.lib import guest_image
from tests.lib import libvirtd

LOG = logging.getLogger(__name__)
READY_TIMEOUT = 60.0


class RealGuestLauncher(object):
    """Starts and stops Debian guests through a private libvirtd.

    :param hook_conf: the nova.conf our hook reads, to install it in the
        daemon's hooks directory (None: no hook, as for the other
        policies).
    :param hook_cache: the hook's settings cache the policy filled.
    """

    def __init__(self, scenario, workdir, hook_conf=None, base_image=None,
                 progress=LOG.info, hook_cache=None):
        self.scenario = scenario
        self.workdir = workdir
        self.base = base_image or guest_image.cached_image(progress=progress)
        self.boot = guest_image.boot_args()
        self.disks = os.path.join(workdir, 'disks')
        os.makedirs(self.disks, exist_ok=True)
        self.hooks = os.path.join(workdir, 'hooks')
        os.makedirs(os.path.join(self.hooks, 'qemu.d'), exist_ok=True)
        if hook_conf:
            self._install_hook(hook_conf, hook_cache)
        # Unix socket paths are limited to 108 bytes: keep the base short.
        self.daemon_dir = tempfile.mkdtemp(prefix='nki-bench-lv-')
        cache = os.path.join(self.daemon_dir, 'cache')
        os.makedirs(cache)
        self.daemon = libvirtd.PrivateLibvirtd(
            os.path.join(self.daemon_dir, 'd'), self.hooks, cache, 'real')
        self.domains = {}
        self.boot_times = {}
        self.ballast = None
        self._pids = {}
        self._lock = threading.Lock()

    def _install_hook(self, conf, cache):
        shim = os.path.join(self.hooks, 'qemu.d', cmd_ksm.SHIM_NAME)
        command = ksm_policies.console_script('nova-ksm-libvirt-hook')
        with open(shim, 'w') as f:
            f.write(cmd_ksm.hook_shim(command, [conf], cache=cache))
        os.chmod(shim, 0o755)

    def start(self):
        self.daemon.start()

    def spawn(self, guest):
        disk = guest_image.overlay(self.base, os.path.join(
            self.disks, guest.name + '.qcow2'))
        domain = self.daemon.start_domain(
            guest.name, guest.mib, boot=self.boot, disk=disk,
            console=self.console(guest.name))
        with self._lock:
            self.domains[guest.name] = domain
        return domain

    def console(self, name):
        return os.path.join(self.disks, name + '.console')

    def booted(self, name):
        """Whether the guest's console shows a login prompt."""
        try:
            with open(self.console(name), 'rb') as f:
                return b' login: ' in f.read()
        except OSError:
            return False

    def wait_ready(self, name):
        """Until the guest's QEMU process is visible (it then boots)."""
        pid = libvirtd.wait_for(lambda: self._find(name), READY_TIMEOUT,
                                what='the QEMU process of %s' % name)
        with self._lock:
            self._pids[name] = pid
        threading.Thread(target=self._time_boot, args=(name,),
                         daemon=True).start()

    def _time_boot(self, name, timeout=600.0):
        """Seconds until the login prompt, into :attr:`boot_times`."""
        began = time.monotonic()
        while name in self.domains and time.monotonic() - began < timeout:
            if self.booted(name):
                self.boot_times[name] = round(time.monotonic() - began, 1)
                return
            time.sleep(0.5)

    @staticmethod
    def _find(name):
        for pid, guest in processes.qemu_guests().items():
            if guest.name == name:
                return pid
        return None

    def pids(self):
        with self._lock:
            return dict(self._pids)

    def spawn_ballast(self, mib, floor_mib=4096):
        self.ballast = ksm_launcher.GuestLauncher(self.scenario,
                                                  self.workdir)
        return self.ballast.spawn_ballast(mib, floor_mib)

    def stop(self, name):
        with self._lock:
            domain = self.domains.pop(name, None)
            self._pids.pop(name, None)
        if domain is not None:
            domain.destroy()
        for path in (os.path.join(self.disks, name + '.qcow2'),
                     self.console(name)):
            if os.path.exists(path):
                os.unlink(path)

    def stop_all(self):
        try:
            for name in list(self.domains):
                self.stop(name)
        finally:
            self.daemon.stop()
            if self.ballast is not None:
                self.ballast.stop_all()
            shutil.rmtree(self.daemon_dir, ignore_errors=True)
