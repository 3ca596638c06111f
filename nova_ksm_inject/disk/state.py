"""The undo journal of one injection, kept in memory and on disk.

Handlers push each resource right after creating it; the journal unwinds
them in reverse (an ExitStack) on success, failure or Ctrl-C. The same list
is written to ``[inject] state_dir`` so that ``nova-ksm-inject cleanup``
(``sweep.py``) can undo what a killed process left behind.

The state directory belongs to root and no one else may enter it (0700):
journals, mountpoints and FUSE exports live there and nowhere else, so no
other host user can read a mounted guest filesystem, pin it busy, or plant
a record for the cleanup to obey::

    STATE_DIR/journal/<id>.json   one record per injection in progress
    STATE_DIR/work/<id>/          its mountpoints, FUSE export, sockets
"""

import contextlib
import json
import os
import stat
import time
import uuid

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject.disk import undo

LOG = logging.getLogger(__name__)

RECORD_SUFFIX = '.json'
RECORD_VERSION = 1
JOURNAL_DIR, WORK_DIR = 'journal', 'work'


def private_dir(path):
    """Create ``path`` (0700, ours) or check an existing one; return it.

    :raises StateDirUnsafe: a symlink, not a directory, or owned by
        another user: someone else could read or plant what it holds.
    """
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    except PermissionError as err:
        raise exception.StateDirUnsafe(
            path=path, reason='this user (uid %d) cannot create it (%s); '
                              'set [inject] %s to a directory it may '
                              'create' % (os.geteuid(), err.strerror,
                                          'state_dir' if os.geteuid() == 0
                                          else 'user_state_dir')) from err
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise exception.StateDirUnsafe(
            path=path, reason='it is not a directory (a symlink?)')
    if info.st_uid != os.geteuid():
        raise exception.StateDirUnsafe(
            path=path, reason='it belongs to uid %d, not to %d'
                              % (info.st_uid, os.geteuid()))
    if info.st_mode & 0o077:
        LOG.warning('State directory %s was mode %o; making it 0700', path,
                    stat.S_IMODE(info.st_mode))
        os.chmod(path, 0o700)
    return path


def state_dir(conf):
    """This process's state directory: ``[inject] state_dir`` for root,
    ``[inject] user_state_dir`` for anyone else (default
    ``/var/tmp/nova-ksm-inject-<uid>``, private to that user)."""
    if os.geteuid() == 0:
        return conf.inject.state_dir
    return conf.inject.user_state_dir or os.path.join(
        '/var/tmp', 'nova-ksm-inject-%d' % os.geteuid())


class StateDir:
    """The root-only ``[inject] state_dir`` and its two subdirectories."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.journals = os.path.join(self.path, JOURNAL_DIR)
        self.work = os.path.join(self.path, WORK_DIR)

    def ensure(self):
        for path in (self.path, self.journals, self.work):
            private_dir(path)
        return self


class Journal:
    """Undo log of one injection; use as a context manager.

    :param state_dir: ``[inject] state_dir`` (created 0700 if needed).
    :param image: image path, for the record and log lines.
    :param handler: handler name, for the record.
    """

    def __init__(self, state_dir, image, handler):
        self.state = StateDir(state_dir).ensure()
        self.image = image
        self.handler = handler
        self.id = '%d-%s' % (os.getpid(), uuid.uuid4().hex[:12])
        self.path = os.path.join(self.state.journals,
                                 self.id + RECORD_SUFFIX)
        self.work_dir = os.path.join(self.state.work, self.id)
        self._steps = []
        self._undo = []
        self._work_made = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(cause=exc)
        return False

    @property
    def steps(self):
        return [dict(step) for step in self._steps]

    def make_dir(self, name):
        """A new directory ``name`` in this injection's work dir (both
        journaled); for mountpoints, FUSE exports and sockets."""
        if not self._work_made:
            os.mkdir(self.work_dir, 0o700)
            self.push('tmpdir', path=self.work_dir)
            self._work_made = True
        path = os.path.join(self.work_dir, name)
        os.mkdir(path, 0o700)
        self.push('tmpdir', path=path)
        return path

    def push(self, kind, undo_now=None, **record):
        """Record a resource of ``kind`` and how to undo it.

        :param kind: a key of :data:`nova_ksm_inject.disk.undo.UNDO`
            (``tmpdir``, ``mount``, ``loop``, ``partx``, ``process``,
            ``nbd``, ``guestmount``).
        :param undo_now: callable undoing it now; defaults to the generic
            undo of ``kind`` applied to ``record``. A handler may pass a
            faster one (e.g. a QMP quit before signalling a daemon).
        :param record: JSON-serialisable facts the sweep needs. A ``pid``
            gets its start time recorded too, so that a sweep never
            signals a process that merely reuses the number.
        """
        if kind not in undo.UNDO:
            raise ValueError('unknown journal resource kind %r' % kind)
        step = dict(record, kind=kind)
        if step.get('pid'):
            step['start'] = procfs.start_time(step['pid'])
        self._steps.append(step)
        self._write()
        action = undo_now or (lambda: undo.UNDO[kind](step))

        def _undo():
            started = time.monotonic()
            action()
            self._steps.remove(step)
            self._write()
            LOG.debug('Undid %s %s in %.3f s', kind, record,
                      time.monotonic() - started)

        self._undo.append(_undo)

    def callback(self, func, *args, **kwargs):
        """Run ``func`` at its place in the unwinding; nothing on disk.

        For in-process state only (an open fd, a library handle): a killed
        process loses it anyway, so the sweep has nothing to undo.
        """
        self._undo.append(lambda: func(*args, **kwargs))

    def close(self, cause=None):
        """Undo every step in reverse, all of them even when one fails.

        :param cause: the exception that ended the injection, if any, for
            the message.
        :raises UnwindFailed: a step could not be undone; the record is
            kept for ``nova-ksm-inject cleanup``.
        """
        errors = []
        interrupted = None
        while self._undo:
            action = self._undo.pop()
            try:
                action()
            except KeyboardInterrupt as err:  # finish unwinding first
                interrupted = err
            except Exception as err:
                LOG.debug('Undo step failed', exc_info=True)
                errors.append(err)
        if not self._steps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if errors:
            raise exception.UnwindFailed(
                image=self.image, reason='; '.join(
                    '%s: %s' % (type(e).__name__, e) for e in errors),
                after=' after: %s' % cause if cause else '',
                record=self.path) from errors[0]
        if interrupted is not None:
            raise interrupted

    def _write(self):
        if not self._steps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        data = {'version': RECORD_VERSION, 'pid': os.getpid(),
                'start': procfs.start_time(os.getpid()), 'image': self.image,
                'handler': self.handler, 'work_dir': self.work_dir,
                'steps': self._steps}
        tmp = self.path + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                     os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f)
        os.replace(tmp, self.path)
