"""The undo journal of one mount, kept in memory and on disk.

Handlers push each resource right after creating it; the journal unwinds
them in reverse (an ExitStack) on success, failure or Ctrl-C. The same list
is written to ``[inject] state_dir`` so that ``nova-ksm-inject cleanup`` can
undo what a killed process left behind, using the generic undo of each
resource kind (:data:`SWEEPERS`).
"""

import contextlib
import json
import os
import shutil
import signal
import time
import uuid

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils

LOG = logging.getLogger(__name__)

RECORD_SUFFIX = '.json'


class Journal:
    """Undo log of one mount; use as a context manager.

    :param state_dir: directory for the on-disk record (created if needed).
    :param image: image path, for the record and log lines.
    :param handler: handler name, for the record.
    """

    def __init__(self, state_dir, image, handler):
        self.image = image
        self.handler = handler
        self._steps = []
        self._stack = contextlib.ExitStack()
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(
            state_dir, '%d-%s%s' % (os.getpid(), uuid.uuid4().hex[:8],
                                    RECORD_SUFFIX))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def steps(self):
        return [dict(step) for step in self._steps]

    def push(self, kind, undo=None, **record):
        """Record a resource of ``kind`` and how to undo it.

        :param kind: a key of :data:`SWEEPERS` (``tmpdir``, ``mount``,
            ``loop``, ``partx``, ``process``, ``nbd``, ``guestmount``).
        :param undo: callable undoing it now; defaults to the generic
            sweeper of ``kind`` applied to ``record``. A handler may pass a
            faster one (e.g. a QMP quit before signalling a daemon).
        :param record: JSON-serialisable facts the sweeper needs.
        """
        if kind not in SWEEPERS:
            raise ValueError('unknown journal resource kind %r' % kind)
        step = dict(record, kind=kind)
        self._steps.append(step)
        self._write()
        action = undo or (lambda: SWEEPERS[kind](step))

        def _undo():
            started = time.monotonic()
            action()
            self._steps.remove(step)
            self._write()
            LOG.debug('Undid %s %s in %.3f s', kind, record,
                      time.monotonic() - started)

        self._stack.callback(_undo)

    def callback(self, func, *args, **kwargs):
        """Run ``func`` at its place in the unwinding; nothing on disk.

        For in-process state only (an open fd, a library handle): a killed
        process loses it anyway, so the sweeper has nothing to undo.
        """
        self._stack.callback(func, *args, **kwargs)

    def close(self):
        """Undo every step in reverse; keep the record if any undo failed."""
        try:
            self._stack.close()
        finally:
            if not self._steps:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    def _write(self):
        if not self._steps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        data = {'pid': os.getpid(), 'image': self.image,
                'handler': self.handler, 'steps': self._steps}
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


# Generic undo per resource kind, shared by live unwinding and sweeping.

def _undo_tmpdir(step):
    path = step['path']
    if os.path.ismount(path):
        raise exception.NovaKsmInjectError(
            'Temporary directory %s is still a mount point; not removing it'
            % path)
    shutil.rmtree(path, ignore_errors=False)


def _undo_mount(step):
    path = step['path']
    if not os.path.ismount(path):
        return
    utils.execute('umount', path, run_as_root=True,
                  action='unmounting %s' % path)


def _undo_loop(step):
    device = step['device']
    out, _err = utils.execute('losetup', '--list', '--noheadings',
                              '--output', 'BACK-FILE', device,
                              run_as_root=True, check_exit_code=False,
                              action='checking loop device %s' % device)
    backing = out.strip()
    if not backing:
        return
    if step.get('backing') and os.path.realpath(backing.split(' (')[0]) != \
            os.path.realpath(step['backing']):
        LOG.warning('Loop device %s now backs %s, not %s; leaving it',
                    device, backing, step['backing'])
        return
    utils.execute('losetup', '--detach', device, run_as_root=True,
                  action='detaching loop device %s' % device)


def _undo_partx(step):
    utils.execute('partx', '--delete', step['device'], run_as_root=True,
                  check_exit_code=False,
                  action='removing partitions of %s' % step['device'])


def _undo_nbd(step):
    device = step['device']
    pid_file = '/sys/block/%s/pid' % os.path.basename(device)
    if not os.path.exists(pid_file):
        return
    utils.execute('qemu-nbd', '--disconnect', device, run_as_root=True,
                  action='disconnecting %s' % device)


def _undo_guestmount(step):
    path = step['path']
    if os.path.ismount(path):
        utils.execute('guestunmount', path, run_as_root=True,
                      action='unmounting guestmount %s' % path)
    if step.get('pid'):
        wait_process_exit(step['pid'], step.get('marker'), timeout=30)


def _undo_process(step):
    stop_process(step['pid'], step.get('marker'),
                 timeout=step.get('timeout', 10))


SWEEPERS = {
    'tmpdir': _undo_tmpdir,
    'mount': _undo_mount,
    'loop': _undo_loop,
    'partx': _undo_partx,
    'nbd': _undo_nbd,
    'guestmount': _undo_guestmount,
    'process': _undo_process,
}


def process_matches(pid, marker=None):
    """True if ``pid`` runs and its command line contains ``marker``."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            cmdline = f.read().replace(b'\0', b' ').decode(errors='replace')
        with open('/proc/%d/stat' % pid) as f:
            if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                return False
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return marker is None or marker in cmdline


def wait_process_exit(pid, marker=None, timeout=10.0, interval=0.01):
    """Wait until ``pid`` is gone; reap it if it is our child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not process_matches(pid, marker):
            return True
        time.sleep(interval)
    return False


def stop_process(pid, marker=None, timeout=10.0):
    """SIGTERM, wait, then SIGKILL; only if the command line matches."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not process_matches(pid, marker):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_process_exit(pid, marker, timeout):
            return
    raise exception.NovaKsmInjectError(
        'Process %d (%s) did not exit after SIGKILL' % (pid, marker))


def records(state_dir):
    """Yield ``(path, record)`` for every journal left in ``state_dir``."""
    if not os.path.isdir(state_dir):
        return
    for name in sorted(os.listdir(state_dir)):
        if not name.endswith(RECORD_SUFFIX):
            continue
        path = os.path.join(state_dir, name)
        try:
            with open(path) as f:
                yield path, json.load(f)
        except (OSError, ValueError) as err:
            LOG.warning('Unreadable journal %s: %s', path, err)


def sweep(state_dir):
    """Undo what dead processes left behind.

    :returns: list of ``(record path, undone steps, errors)``.
    """
    results = []
    for path, record in records(state_dir):
        pid = record.get('pid')
        if pid and pid != os.getpid() and process_matches(pid):
            LOG.info('Journal %s belongs to running process %d; skipping',
                     path, pid)
            continue
        steps = record.get('steps', [])
        undone, errors = [], []
        for step in reversed(steps):
            try:
                SWEEPERS[step['kind']](step)
                undone.append(step)
            except Exception as err:  # keep sweeping the rest
                errors.append('%s: %s' % (step['kind'], err))
        if not errors:
            os.unlink(path)
        results.append((path, undone, errors))
    return results
