"""The small state directory shared by the hook, the tuner and the commands.

Layout (``[ksm] state_dir``, default ``/run/nova-ksm-inject/ksm``)::

    lock            fcntl lock serialising hooks, commands and the tuner
    guests/<uuid>   one JSON record per running guest, written by the hook
    events          JSON {"generation": N, "kind": "start"|"stop", ...}
    tuner           JSON state the tuner publishes (pid, state, knobs...)
    saved           JSON KSM settings found before the first change
    ksmd-nice       JSON {"pid": ksmd's pid, "nice": N}: the nice value
                    ksmd had before a boost raised its priority

Every file is written to a temporary name and renamed, so a reader never
sees half a file; writers hold the lock so concurrent hooks never lose an
event. The tuner polls ``events`` instead of being signalled: a hook must
never wait for another process.
"""

import contextlib
import errno
import fcntl
import json
import os
import time

from oslo_log import log as logging

from nova_ksm_inject import exception

LOG = logging.getLogger(__name__)


class KsmStateDir(object):
    """Reader and writer of one state directory.

    :param clock: wall-clock seconds (injectable for tests).
    """

    def __init__(self, path, clock=time.time, sleeper=time.sleep):
        self.path = path
        self.clock = clock
        self.sleeper = sleeper

    def _file(self, *names):
        return os.path.join(self.path, *names)

    def ensure(self):
        os.makedirs(self._file('guests'), mode=0o755, exist_ok=True)

    @contextlib.contextmanager
    def locked(self, timeout=5.0):
        """Hold the directory lock, waiting at most ``timeout`` seconds."""
        self.ensure()
        fd = os.open(self._file('lock'), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = self.clock() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if self.clock() >= deadline:
                        raise exception.NovaKsmInjectError(
                            'Timed out after %.1fs waiting for the KSM state '
                            'lock %s; another hook or command holds it'
                            % (timeout, self._file('lock'))) from err
                    self.sleeper(0.01)
            yield self
        finally:
            os.close(fd)

    def _write_json(self, name, data):
        self.ensure()
        # Not tempfile.mkstemp: importing tempfile costs the libvirt hook,
        # which writes here at every guest event, 4 ms of its ~40.
        tmp = os.path.join(os.path.dirname(self._file(name)), '.tmp-%d-%s' % (
            os.getpid(), os.urandom(6).hex()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(data, f, sort_keys=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self._file(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _read_json(self, name):
        try:
            with open(self._file(name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    # Guests -------------------------------------------------------------
    def record_guest(self, guest):
        """Record (or update) a guest: a dict with at least ``uuid``."""
        record = dict(self._read_json(os.path.join('guests',
                                                   guest['uuid'])) or {})
        if 'pid' in guest and guest['pid'] is None:
            # Before QEMU runs (prepare, start): a new start. The process
            # and start time of an earlier run (whose release event was
            # lost) say nothing about this one.
            for key in ('pid', 'qemu_pid', 'since'):
                record.pop(key, None)
        record.update({k: v for k, v in guest.items() if v is not None})
        record.setdefault('since', self.clock())
        self._write_json(os.path.join('guests', guest['uuid']), record)

    def remove_guest(self, uuid):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file('guests', uuid))

    def guests(self):
        """Every recorded guest, oldest first."""
        try:
            names = os.listdir(self._file('guests'))
        except FileNotFoundError:
            return []
        records = [self._read_json(os.path.join('guests', n))
                   for n in names if not n.startswith('.')]
        return sorted((r for r in records if r),
                      key=lambda r: r.get('since', 0))

    def reconcile(self, guests, timeout=0.5):
        """Bring the records in line with the processes that run.

        Forgets the records of ``guests.gone`` (a release event that never
        came) and remembers which QEMU process serves each live record, so
        that its exit is noticed at once. Takes the lock; when a hook
        holds it longer than ``timeout``, the next call does the work.

        :param guests: a :class:`nova_ksm_inject.ksm.control.Guests`.
        :returns: the records forgotten.
        """
        changes = [(record, pid) for record, pid in guests.live
                   if pid and record.get('qemu_pid') != pid]
        if not changes and not guests.gone:
            return []
        try:
            with self.locked(timeout=timeout):
                return self._reconcile_locked(changes, guests.gone)
        except exception.NovaKsmInjectError as err:
            LOG.debug('Guest records not reconciled this time: %s', err)
            return []

    def _reconcile_locked(self, changes, gone):
        for record, pid in changes:
            current = self._current(record)
            if current is not None:
                self._write_json(os.path.join('guests', record['uuid']),
                                 dict(current, qemu_pid=pid))
        forgotten = []
        for record, why in gone:
            if self._current(record) is not None:
                LOG.info('Forgetting guest %s (%s): %s', record.get('name'),
                         record['uuid'], why)
                self.remove_guest(record['uuid'])
                forgotten.append(record)
        return forgotten

    def _current(self, record):
        """The record as stored now, if it is still the same guest (a
        hook may have removed it, or recorded a new start, meanwhile)."""
        current = self._read_json(os.path.join('guests', record['uuid']))
        if current and current.get('since') == record.get('since'):
            return current
        return None

    # Events -------------------------------------------------------------
    def bump_event(self, kind, domain):
        """Tell the tuner something happened; returns the new generation."""
        generation = self.event().get('generation', 0) + 1
        self._write_json('events', {'generation': generation, 'kind': kind,
                                    'domain': domain, 'time': self.clock()})
        return generation

    def event(self):
        return self._read_json('events') or {'generation': 0}

    # Tuner --------------------------------------------------------------
    def write_tuner(self, state):
        state = dict(state, pid=os.getpid(), updated=self.clock())
        self._write_json('tuner', state)

    def tuner(self):
        return self._read_json('tuner')

    def tuner_alive(self):
        """Whether a tuner published its state within three of its polls.

        A heartbeat rather than a pid: the hook may run in another pid
        namespace than the tuner (libvirtd in a container).
        """
        state = self.tuner()
        if not state or state.get('state') == 'stopped':
            return False
        max_age = max(15.0, 3 * state.get('poll_interval', 1.0))
        return self.clock() - state.get('updated', 0) <= max_age

    # Saved KSM settings -------------------------------------------------
    def save_ksm_once(self, settings):
        """Keep ``settings`` unless some earlier change already saved."""
        if self.saved_ksm() is not None:
            return False
        self._write_json('saved', {'knobs': settings, 'time': self.clock()})
        LOG.info('Saved KSM settings %s in %s', settings, self._file('saved'))
        return True

    def saved_ksm(self):
        data = self._read_json('saved')
        return data['knobs'] if data else None

    def clear_saved_ksm(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file('saved'))

    # ksmd's priority during a boost --------------------------------------
    def save_ksmd_nice(self, pid, nice):
        """Record ksmd's nice value before the tuner changes it, so that a
        tuner started after a crash can put it back."""
        self._write_json('ksmd-nice', {'pid': pid, 'nice': nice})

    def saved_ksmd_nice(self):
        """The :meth:`save_ksmd_nice` record ({"pid", "nice"}), or None."""
        data = self._read_json('ksmd-nice')
        if not isinstance(data, dict) or not isinstance(
                data.get('nice'), int) or not isinstance(data.get('pid'), int):
            return None
        return data

    def clear_ksmd_nice(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file('ksmd-nice'))
