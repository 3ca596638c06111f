"""The ``guestmount`` interface of the ``guestfs`` handler.

``guestmount`` exposes the guest over FUSE (the filesystem is still parsed
inside the libguestfs appliance); files are then written through
:class:`~nova_ksm_inject.disk.files.host.HostRootFiles`. After unmounting,
the journal waits for the guestmount process to exit (it flushes and stops
the appliance first) before the image counts as free. guestmount and its
appliance run under ``[guestfs] guestmount_cpu_time`` and
``guestmount_address_space``.
"""

import os
import signal
import subprocess

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils
from nova_ksm_inject.disk.files import host
from nova_ksm_inject.disk.handlers import base

LOG = logging.getLogger(__name__)

TIMEOUT_HINT = ('on hosts whose KVM the appliance cannot use set [guestfs] '
                'backend_settings = force_tcg, or raise [guestfs] '
                'launch_timeout')


def read_pid(path):
    """The pid in guestmount's pid file ``path``, or None when it is
    missing or empty."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def kill_appliances(parent, image_path):
    """SIGKILL the qemu children of ``parent`` that opened ``image_path``.

    libguestfs canonicalises a drive's path (``/proc/<pid>/fd/<n>``
    becomes the file's real path) before it starts qemu: look for that.

    :returns: the pids killed.
    """
    # libguestfs doubles commas in the -drive file= value.
    needle = 'file=%s,' % image_path.replace(',', ',,')
    killed = []
    for info in procfs.process_iter():
        if info.ppid != parent:
            continue
        try:
            argv = procfs.cmdline(info.pid)
        except procfs.ProcError:
            continue  # exited meanwhile
        if argv and 'qemu' in os.path.basename(argv[0]) and \
                any(needle in arg for arg in argv):
            os.kill(info.pid, signal.SIGKILL)
            killed.append(info.pid)
    return killed


def mount(conf, image, partition, journal):
    """Mount the guest of ``image`` with guestmount; its HostRootFiles.

    Every resource is on ``journal``; the chain unwinds it.
    """
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
    if conf.guestfs.debug:
        cmd += ['-v', '-x']
    try:
        _run(conf, image, cmd + [mountpoint])
    finally:
        if os.path.ismount(mountpoint):
            journal.push('guestmount', path=mountpoint,
                         pid=read_pid(pidfile), marker=mountpoint)
    LOG.info('guestmount mounted %s at %s', image.path, mountpoint)
    files = host.HostRootFiles(mountpoint, conf)
    journal.callback(files.close)
    return files

def _environment(conf):
    env = dict(os.environ, LIBGUESTFS_BACKEND=conf.guestfs.backend)
    if conf.guestfs.backend_settings:
        env['LIBGUESTFS_BACKEND_SETTINGS'] = ':'.join(
            conf.guestfs.backend_settings)
    return env

def _run(conf, image, args):
    timeout = conf.guestfs.launch_timeout
    launched = []
    try:
        utils.execute('guestmount', *args,
                      preexec_fn=utils.ResourceLimits(
                          cpu_time=conf.guestfs.guestmount_cpu_time,
                          address_space=(
                              conf.guestfs.guestmount_address_space)),
                      env_variables=_environment(conf),
                      timeout=timeout,
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
