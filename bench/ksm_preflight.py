"""What the KSM benchmark checks before it changes anything.

It refuses, with the cause and the fix, to run where it cannot: without
root, KSM, a writable ``/sys/kernel/mm/ksm``, the peers asked for
(ksmtuned, the kernel advisor), our console scripts, the tools real guests
need, or memory for the guests while leaving :data:`BALLAST_FLOOR_MIB` to
the rest of a shared host; and while another KSM controller runs.
"""

import os
import shutil

from bench import ksm_policies
from bench import ksm_scenario
from nova_ksm_inject import exception
from nova_ksm_inject import procfs

MEMORY_MARGIN_MIB = 1024
# Never drive the shared host's MemAvailable under this (others work too).
BALLAST_FLOOR_MIB = 2048


class BenchRefused(exception.NovaKsmInjectError):
    msg_fmt = "Cannot run the KSM benchmark: %(reason)s"


def preflight(policies, sysfs, scenario, euid=None, available_mib=None):
    """Refuse, with the cause and the fix, what cannot run here.

    :raises BenchRefused, KsmUnavailable, KsmNotWritable: nothing changed.
    """
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise BenchRefused(reason='it must run as root: it writes %s and '
                                  'reads ksmd\'s CPU time; run it with sudo'
                                  % sysfs.root)
    sysfs.require()
    sysfs.check_writable(['run', 'pages_to_scan', 'sleep_millisecs'])
    if 'advisor' in policies and not sysfs.has('advisor_mode'):
        raise BenchRefused(reason='this kernel has no KSM advisor (Linux '
                                  '6.8+); drop "advisor" from --policies')
    if 'ksmtuned' in policies and not os.access(ksm_policies.KSMTUNED,
                                                os.X_OK):
        raise BenchRefused(reason='%s is missing; install the ksmtuned '
                                  'package or drop "ksmtuned" from '
                                  '--policies' % ksm_policies.KSMTUNED)
    for name in ('nova-ksm-tuner', 'nova-ksm-libvirt-hook'):
        if 'adaptive' in policies and not ksm_policies.console_script(name):
            raise BenchRefused(reason='%s is not installed; pip install '
                                      'nova-ksm-inject' % name)
    if scenario.kind == ksm_scenario.REAL_GUESTS:
        _preflight_real_guests()
    if available_mib is None:
        available_mib = procfs.meminfo()['MemAvailable'] // 1024
    needed = (scenario.peak_guests * scenario.guest_mib
              + MEMORY_MARGIN_MIB + BALLAST_FLOOR_MIB)
    if needed > available_mib:
        raise BenchRefused(reason='the guests need %d MiB but only %d MiB '
                                  'are available; lower --guests or '
                                  '--guest-mib' % (needed, available_mib))


def _preflight_real_guests():
    """A private libvirtd needs these; the guest disk needs debootstrap
    once, and guests boot the host's Debian kernel."""
    from tests.lib import guest_image
    tools = ['libvirtd', 'virtlogd', 'unshare', 'qemu-img', 'mkfs.ext4']
    if not os.path.exists(os.path.join(guest_image.CACHE_DIR,
                                       guest_image.IMAGE_NAME)):
        tools.append('debootstrap')
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise BenchRefused(reason='real guests need %s; install the '
                                  'packages of bindep.txt (tools/install-'
                                  'packages)' % ', '.join(missing))
    try:
        guest_image.host_kernel()
    except guest_image.ImageBuildFailed as err:
        raise BenchRefused(reason=str(err)) from err


def competing_controllers(proc_root=None):
    """Running KSM controllers that would fight the benchmark."""
    found = []
    for pid in sorted(procfs.pids(proc_root)):
        try:
            cmdline = procfs.cmdline(pid, proc_root=proc_root)
        except procfs.ProcError:
            continue  # gone meanwhile
        if any(os.path.basename(arg) in ('ksmtuned', 'nova-ksm-tuner')
               for arg in cmdline[:2]):
            found.append('%s (pid %d)' % (' '.join(cmdline[:2]).strip(),
                                          pid))
    return found
