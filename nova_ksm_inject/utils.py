"""Running commands: the one place this package starts a process.

``execute`` wraps oslo.concurrency's ``processutils.execute``: a missing
binary becomes ToolMissing and a non-zero exit becomes CommandFailed, each
naming what was being done. Commands run with the caller's privileges:
privileged ones only ever run inside a privsep daemon (or a root caller),
never through a root helper, so the rootwrap filters list nothing but
``privsep-helper``.
"""

import resource

from oslo_concurrency import processutils
from oslo_log import log as logging

from nova_ksm_inject import exception

LOG = logging.getLogger(__name__)

# Debian package providing each tool, for "install X" messages.
PACKAGES = {
    'qemu-img': 'qemu-utils',
    'qemu-nbd': 'qemu-utils',
    'qemu-storage-daemon': 'qemu-system-common',
    'losetup': 'mount',
    'mount': 'mount',
    'umount': 'mount',
    'partx': 'util-linux',
    'blkid': 'util-linux',
    'guestmount': 'guestmount',
    'guestunmount': 'guestmount',
    'debugfs': 'e2fsprogs',
    'modprobe': 'kmod',
}


def execute(*cmd, action=None, check_exit_code=True, **kwargs):
    """Run ``cmd`` and return ``(stdout, stderr)``.

    :param action: what is being done, for error messages
        ("attaching loop device").
    :raises ToolMissing: the binary does not exist.
    :raises CommandFailed: non-zero exit (when ``check_exit_code``).
    """
    action = action or 'running %s' % cmd[0]
    try:
        return processutils.execute(*cmd, check_exit_code=check_exit_code,
                                    **kwargs)
    except FileNotFoundError as err:
        raise exception.ToolMissing(
            tool=cmd[0], action=action,
            package=PACKAGES.get(cmd[0], 'that provides it')) from err
    except processutils.ProcessExecutionError as err:
        raise exception.CommandFailed(
            action=action.capitalize(), cmd=' '.join(str(c) for c in cmd),
            code=err.exit_code, stderr=last_line(err.stderr)) from err


def last_line(text):
    """The last non-empty line of a command's output, for one-line errors."""
    lines = [line.strip() for line in (text or '').splitlines()
             if line.strip()]
    return lines[-1] if lines else '(no output)'


class ResourceLimits:
    """Resource limits applied in the child between fork and exec.

    The same protection as oslo.concurrency's ``ProcessLimits`` (how nova
    caps ``qemu-img``, CVE-2015-5162) without its extra Python interpreter
    per command, which costs ~60 ms here. Pass as ``preexec_fn``.
    """

    def __init__(self, cpu_time, address_space):
        self.cpu_time = cpu_time
        self.address_space = address_space

    def __call__(self):
        resource.setrlimit(resource.RLIMIT_CPU,
                           (self.cpu_time, self.cpu_time))
        resource.setrlimit(resource.RLIMIT_AS,
                           (self.address_space, self.address_space))

    def __repr__(self):
        return 'ResourceLimits(cpu_time=%d, address_space=%d)' % (
            self.cpu_time, self.address_space)
