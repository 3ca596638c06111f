"""Running commands: the one place this package starts a process.

``execute`` keeps the contract of oslo.concurrency's
``processutils.execute`` (argument list, never a shell; ``(stdout,
stderr)`` decoded with the file system encoding; stdin closed; the command,
its exit code and duration logged at DEBUG) on the standard library alone:
importing ``processutils`` costs ~0.1 s of CPU (``oslo_utils.strutils``
compiles hundreds of password-masking patterns at import), a fifth of a
command's run. Nothing is masked because no command here carries a secret
(the admin password is hashed in this process and written through a file
descriptor). A missing binary becomes ToolMissing and a non-zero exit
becomes CommandFailed, each naming what was being done. Commands run with
the caller's privileges: privileged ones only ever run inside a privsep
daemon (or a root caller), never through a root helper, so the rootwrap
filters list nothing but ``nova-ksm-inject-privsep-helper``.
"""

import os
import resource
import subprocess
import time

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
    'fusermount3': 'fuse3',
    'fuse2fs': 'fuse2fs',
    'bwrap': 'bubblewrap',
}


def execute(*cmd, action=None, check_exit_code=True, process_input=None,
            env_variables=None, cwd=None, timeout=None, on_execute=None,
            preexec_fn=None, pass_fds=()):
    """Run ``cmd`` and return ``(stdout, stderr)``.

    :param action: what is being done, for error messages
        ("attaching loop device").
    :param check_exit_code: False accepts any exit status.
    :param process_input: bytes or text for the command's stdin.
    :param env_variables: the command's whole environment (default: ours).
    :param timeout: seconds; past it ``subprocess.TimeoutExpired`` is
        raised and the process is left running for the caller to stop
        (``on_execute`` receives the ``Popen`` as it starts).
    :param preexec_fn: run in the child before exec (resource limits).
    :param pass_fds: descriptors the command inherits.
    :raises ToolMissing: the binary does not exist.
    :raises CommandFailed: non-zero exit (when ``check_exit_code``).
    """
    action = action or 'running %s' % cmd[0]
    cmd = [str(c) for c in cmd]
    text = ' '.join(cmd)
    if isinstance(process_input, str):
        process_input = process_input.encode()
    LOG.debug('Running cmd (subprocess): %s', text)
    started = time.monotonic()
    try:
        # restore_signals (the default) gives the child SIGPIPE back.
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, env=env_variables,
                                preexec_fn=preexec_fn, pass_fds=pass_fds)
    except FileNotFoundError as err:
        raise exception.ToolMissing(
            tool=cmd[0], action=action,
            package=PACKAGES.get(cmd[0], 'that provides it')) from err
    if on_execute:
        on_execute(proc)
    try:
        out, errout = proc.communicate(process_input, timeout=timeout)
    except subprocess.TimeoutExpired:
        LOG.debug('CMD "%s" reached timeout in %0.3fs', text,
                  time.monotonic() - started)
        raise
    LOG.debug('CMD "%s" returned: %s in %0.3fs', text, proc.returncode,
              time.monotonic() - started)
    out, errout = os.fsdecode(out), os.fsdecode(errout)
    if check_exit_code and proc.returncode != 0:
        raise exception.CommandFailed(
            action=action.capitalize(), cmd=text, code=proc.returncode,
            stderr=last_line(errout))
    return out, errout


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
