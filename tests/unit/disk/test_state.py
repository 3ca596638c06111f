"""The undo journal in the root-only state directory: what it records for
the sweep, where work directories go, and the unwinding."""

import json
import os
import stat
import subprocess
import sys

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject.disk import state


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def record(journal):
    with open(journal.path) as f:
        return json.load(f)


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / 'run' / 'inject')


def test_state_dir_is_created_private(state_dir):
    found = state.StateDir(state_dir).ensure()
    for path in (found.path, found.journals, found.work):
        assert os.path.isdir(path) and mode(path) == 0o700
    assert (found.journals, found.work) == (
        os.path.join(state_dir, 'journal'), os.path.join(state_dir, 'work'))


def test_loose_mode_is_tightened(state_dir, caplog):
    os.makedirs(os.path.join(state_dir, 'work'), mode=0o777)
    os.chmod(os.path.join(state_dir, 'work'), 0o777)
    state.StateDir(state_dir).ensure()
    assert mode(os.path.join(state_dir, 'work')) == 0o700
    assert 'was mode 777; making it 0700' in caplog.text


@pytest.mark.parametrize('kind', ['symlink', 'file'])
def test_state_dir_that_is_not_a_directory_is_refused(state_dir, tmp_path,
                                                      kind):
    os.makedirs(state_dir)
    journals = os.path.join(state_dir, 'journal')
    if kind == 'symlink':
        (tmp_path / 'planted').mkdir()
        os.symlink(tmp_path / 'planted', journals)
    else:
        open(journals, 'w').close()
    with pytest.raises(exception.StateDirUnsafe, match='not a directory'):
        state.StateDir(state_dir).ensure()
    with pytest.raises(exception.StateDirUnsafe):
        state.Journal(state_dir, '/img', 'loop')


def test_state_dir_of_another_user_is_refused(state_dir, monkeypatch):
    os.makedirs(state_dir)
    someone_else = os.geteuid() + 1
    monkeypatch.setattr(state.os, 'geteuid', lambda: someone_else)
    with pytest.raises(exception.StateDirUnsafe, match='belongs to uid'):
        state.StateDir(state_dir).ensure()


def test_work_dirs_live_under_work_and_are_journaled(state_dir):
    with state.Journal(state_dir, '/img/disk', 'qsd') as journal:
        first = journal.make_dir('qsd')
        second = journal.make_dir('root')
        assert journal.work_dir == os.path.join(state_dir, 'work',
                                                journal.id)
        assert (first, second) == (os.path.join(journal.work_dir, 'qsd'),
                                   os.path.join(journal.work_dir, 'root'))
        assert all(mode(p) == 0o700 for p in (journal.work_dir, first,
                                              second))
        assert [s['path'] for s in record(journal)['steps']] == [
            journal.work_dir, first, second]
    assert not os.path.exists(journal.work_dir)
    assert not os.path.exists(journal.path)


def test_record_says_what_the_sweep_needs(state_dir):
    sleeper = subprocess.Popen([sys.executable, '-c',
                                'import time; time.sleep(30)'])
    try:
        journal = state.Journal(state_dir, '/img/disk', 'nbd')
        journal.push('loop', undo_now=lambda: None, device='/dev/loop3',
                     backing='/img/disk')
        journal.push('process', undo_now=lambda: None, pid=sleeper.pid,
                     marker='/x')
        data = record(journal)
        assert mode(journal.path) == 0o600
        assert (data['version'], data['pid'], data['image'],
                data['handler'], data['work_dir']) == (
            state.RECORD_VERSION, os.getpid(), '/img/disk', 'nbd',
            journal.work_dir)
        assert data['start'] == procfs.start_time(os.getpid())
        assert data['steps'] == [
            {'kind': 'loop', 'device': '/dev/loop3', 'backing': '/img/disk'},
            {'kind': 'process', 'pid': sleeper.pid, 'marker': '/x',
             'start': procfs.start_time(sleeper.pid)}]
        assert isinstance(data['steps'][1]['start'], int)
        journal.close()
        assert not os.path.exists(journal.path)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_unknown_kind_is_a_programming_error(state_dir):
    with pytest.raises(ValueError, match='unknown journal resource'):
        state.Journal(state_dir, '/img', 'loop').push('rm -rf', path='/')


def test_unwinds_in_reverse_with_callbacks_in_place(state_dir):
    done = []
    journal = state.Journal(state_dir, '/img', 'loop')
    journal.push('loop', undo_now=lambda: done.append('loop'),
                 device='/dev/loop1')
    journal.callback(done.append, 'close fd')
    journal.push('mount', undo_now=lambda: done.append('mount'), path='/m')
    assert len(record(journal)['steps']) == 2
    journal.close()
    assert done == ['mount', 'close fd', 'loop']
    assert not os.path.exists(journal.path)


def test_failed_undo_keeps_its_step_for_the_sweep(state_dir):
    done = []

    def busy():
        raise OSError(16, 'Device or resource busy')
    journal = state.Journal(state_dir, '/img', 'loop')
    journal.push('loop', undo_now=lambda: done.append('loop'),
                 device='/dev/loop1')
    journal.push('mount', undo_now=busy, path='/m')
    journal.push('tmpdir', undo_now=lambda: done.append('tmpdir'),
                 path='/t')
    with pytest.raises(exception.UnwindFailed) as err:
        journal.close()
    assert done == ['tmpdir', 'loop']  # every other step still undone
    assert [s['kind'] for s in record(journal)['steps']] == ['mount']
    assert 'Device or resource busy' in str(err.value)
    assert journal.path in str(err.value)
