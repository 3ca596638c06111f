"""How each kind of journaled resource is undone, live or by the sweep.

Shared by the journal's unwinding (``state.py``) and the cleanup sweep
(``sweep.py``). Processes are only signalled when their pid, start time
and command line all match what was recorded.
"""

import contextlib
import os
import shutil
import signal
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils
from nova_ksm_inject.disk import fuse

LOG = logging.getLogger(__name__)

def wait_process_exit(pid, marker=None, timeout=10.0, interval=0.01,
                      start=None):
    """Wait until ``pid`` is gone or a zombie; reap it if it is our child.

    :param marker: when given and ``start`` is not, the process must still
        show it at the first look (else it is someone else's: not waited).
    """
    if start is None and marker is not None:
        if not procfs.process_matches(pid, marker):
            return True
        start = procfs.start_time(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not procfs.running(pid, start):
            return True
        time.sleep(interval)
    return False


def stop_process(pid, marker=None, timeout=10.0, start=None):
    """SIGTERM, wait, then SIGKILL; only while pid, start and command line
    still match."""
    if not procfs.process_matches(pid, marker, start):
        return
    start = procfs.start_time(pid) if start is None else start
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not procfs.running(pid, start):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_process_exit(pid, timeout=timeout, start=start):
            return
    raise exception.NovaKsmInjectError(
        'Process %d (%s) did not exit after SIGKILL' % (pid, marker))


def mounts_under(path):
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    prefix = path.rstrip('/') + '/'
    return [point for point in procfs.mount_points()
            if point == path or point.startswith(prefix)]


def _undo_tmpdir(step):
    path = step['path']
    busy = mounts_under(path)
    if busy:
        raise exception.NovaKsmInjectError(
            'Work directory %s still holds mount point(s) %s; not removing '
            'it' % (path, ', '.join(busy)))
    shutil.rmtree(path, ignore_errors=False)


def _undo_mount(step):
    path = step['path']
    if not os.path.ismount(path):
        return
    utils.execute('umount', path, action='unmounting %s' % path)


def _undo_loop(step):
    device = step['device']
    out, _err = utils.execute('losetup', '--list', '--noheadings',
                              '--output', 'BACK-FILE', device,
                              check_exit_code=False,
                              action='checking loop device %s' % device)
    backing = out.strip()
    if not backing:
        return
    if step.get('backing') and os.path.realpath(backing.split(' (')[0]) != \
            os.path.realpath(step['backing']):
        LOG.warning('Loop device %s now backs %s, not %s; leaving it',
                    device, backing, step['backing'])
        return
    utils.execute('losetup', '--detach', device,
                  action='detaching loop device %s' % device)


def _undo_partx(step):
    utils.execute('partx', '--delete', step['device'], check_exit_code=False,
                  action='removing partitions of %s' % step['device'])


def _undo_nbd(step):
    device = step['device']
    pid_file = '/sys/block/%s/pid' % os.path.basename(device)
    if not os.path.exists(pid_file):
        return
    utils.execute('qemu-nbd', '--disconnect', device,
                  action='disconnecting %s' % device)


def _undo_fuse(step):
    fuse.unmount(step['path'], lazy=True)


def _undo_guestmount(step):
    path = step['path']
    if os.path.ismount(path):
        utils.execute('guestunmount', path,
                      action='unmounting guestmount %s' % path)
    if step.get('pid'):
        wait_process_exit(step['pid'], step.get('marker'), timeout=30,
                          start=step.get('start'))


def _undo_process(step):
    if step.get('pid'):
        stop_process(step['pid'], step.get('marker'),
                     timeout=step.get('timeout', 10),
                     start=step.get('start'))
    if step.get('sandbox') and step.get('marker'):
        # A sandbox whose caller was killed while bubblewrap was still
        # setting up can outlive it, orphaned; its command line names the
        # injection's work directory, which nothing else does.
        for pid in procfs.pids():
            if pid != os.getpid() and \
                    procfs.process_matches(pid, step['marker']):
                stop_process(pid, step['marker'],
                             timeout=step.get('timeout', 10))


UNDO = {
    'tmpdir': _undo_tmpdir,
    'mount': _undo_mount,
    'loop': _undo_loop,
    'partx': _undo_partx,
    'nbd': _undo_nbd,
    'guestmount': _undo_guestmount,
    'fuse': _undo_fuse,
    'process': _undo_process,
}
