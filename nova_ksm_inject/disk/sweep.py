"""``nova-ksm-inject cleanup``: undo what killed injections left behind.

A record is obeyed only when it is one this code wrote and can validate:
the current record version, every path inside the state directory's
``work/``, devices named as loop or nbd devices, and every process by
pid, start time and command line. A foreign or corrupt record is reported
and skipped, never obeyed: the sweep runs as root.
"""

import dataclasses
import json
import os
import re

from oslo_log import log as logging

from nova_ksm_inject import procfs
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk import undo

LOG = logging.getLogger(__name__)

_LOOP = re.compile(r'/dev/loop[0-9]+\Z')
_NBD = re.compile(r'/dev/nbd[0-9]+\Z')


class RecordInvalid(ValueError):
    """A journal record this code did not write, or cannot trust."""


@dataclasses.dataclass
class SweepResult:
    """What the sweep did with one record (plain data for privsep)."""

    record: str
    undone: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)
    skipped: str = None
    foreign: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)


def _inside(path, directory):
    if not isinstance(path, str) or os.path.normpath(path) != path:
        return False
    return os.path.commonpath([path, directory]) == directory and \
        path != directory


def _check_step(step, work):
    kind = step.get('kind')
    if kind not in undo.UNDO:
        raise RecordInvalid('unknown step kind %r' % kind)
    if kind in ('tmpdir', 'mount', 'guestmount', 'fuse') and \
            not _inside(step.get('path'), work):
        raise RecordInvalid('%s path %r is not inside %s'
                            % (kind, step.get('path'), work))
    if kind in ('loop', 'partx') and \
            not _LOOP.match(str(step.get('device'))):
        raise RecordInvalid('%r is not a loop device' % step.get('device'))
    if kind == 'nbd' and not _NBD.match(str(step.get('device'))):
        raise RecordInvalid('%r is not an nbd device' % step.get('device'))
    if kind == 'process':
        if not _inside(step.get('marker'), work):
            raise RecordInvalid('process marker %r is not inside %s'
                                % (step.get('marker'), work))
    if kind in ('process', 'guestmount') and step.get('pid') is not None:
        if not isinstance(step['pid'], int) or step['pid'] <= 1 or \
                not isinstance(step.get('start'), int):
            raise RecordInvalid('process %r has no valid pid and start time'
                                % step.get('pid'))


def validate(record, state_dir):
    """Raise RecordInvalid unless ``record`` is ours and safe to obey."""
    if not isinstance(record, dict) or \
            record.get('version') != state.RECORD_VERSION:
        raise RecordInvalid('not a version %d journal record'
                            % state.RECORD_VERSION)
    if not isinstance(record.get('steps'), list) or \
            not isinstance(record.get('pid'), int):
        raise RecordInvalid('no pid or step list')
    for step in record['steps']:
        if not isinstance(step, dict):
            raise RecordInvalid('a step is not an object')
        _check_step(step, state_dir.work)


def _load(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd) as f:
        return json.load(f)


def sweep(state_dir_path):
    """Undo the journals of dead processes in ``state_dir_path``.

    :returns: a list of :class:`SweepResult`, one per record found.
    """
    state_dir = state.StateDir(state_dir_path)
    if not os.path.isdir(state_dir.journals):
        return []
    state_dir.ensure()
    return [_sweep_one(state_dir, os.path.join(state_dir.journals, name))
            for name in sorted(os.listdir(state_dir.journals))
            if name.endswith(state.RECORD_SUFFIX)]


def _sweep_one(state_dir, path):
    result = SweepResult(record=path)
    try:
        record = _load(path)
        validate(record, state_dir)
    except (OSError, ValueError) as err:
        result.foreign = True
        result.skipped = ('foreign or corrupt record (%s); not obeyed: '
                          'check it and remove it by hand' % err)
        LOG.warning('Journal %s skipped: %s', path, result.skipped)
        return result
    if record['pid'] != os.getpid() and \
            procfs.process_matches(record['pid'],
                                   starttime=record.get('start')):
        result.skipped = 'belongs to running process %d' % record['pid']
        LOG.info('Journal %s %s', path, result.skipped)
        return result
    for step in reversed(record['steps']):
        try:
            undo.UNDO[step['kind']](step)
            result.undone.append(step)
        except Exception as err:  # keep sweeping the rest
            result.errors.append('%s: %s' % (step['kind'], err))
    if not result.errors:
        os.unlink(path)
    return result
