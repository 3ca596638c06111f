"""``nova-ksm-inject cleanup``: records of killed injections are undone;
foreign or corrupt ones are reported and never obeyed.

The sweep runs as root, so a record planted in the state directory must
not make it remove, unmount, detach or signal anything of its choosing.
Records here are written into a temporary state directory; commands
(umount, losetup, ...) go to a stand-in for ``utils.execute``; processes
are real children of the test.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk import sweep
from nova_ksm_inject.disk import undo


def dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


@pytest.fixture
def host(tmp_path, monkeypatch, conf):
    """A state dir, a precious host directory, and recorded commands."""
    found = state.StateDir(conf.conf.inject.state_dir).ensure()
    precious = tmp_path / 'precious'
    precious.mkdir()
    (precious / 'data').write_text('keep me')
    commands = []

    def execute(*cmd, **kwargs):
        commands.append(cmd)
        if cmd[:2] == ('losetup', '--list'):
            return '/img/disk\n', ''
        return '', ''
    monkeypatch.setattr(utils, 'execute', execute)
    return {'state': found, 'precious': precious, 'commands': commands}


def plant(host, steps, name='planted', **fields):
    """Write a record of a dead process with ``steps``; return its path."""
    data = {'version': state.RECORD_VERSION, 'pid': dead_pid(),
            'start': 1, 'image': '/img/disk', 'handler': 'loop',
            'work_dir': os.path.join(host['state'].work, name),
            'steps': steps}
    data.update(fields)
    path = os.path.join(host['state'].journals, name + state.RECORD_SUFFIX)
    with open(path, 'w') as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


def untouched(host, *records):
    assert host['commands'] == []
    assert (host['precious'] / 'data').read_text() == 'keep me'
    assert all(os.path.exists(r) for r in records)


def test_killed_injection_is_undone(host, monkeypatch):
    # What a real journal left when its process was killed mid-way.
    journal = state.Journal(host['state'].path, '/img/disk', 'loop')
    root = journal.make_dir('root')
    journal.push('loop', device='/dev/loop7', backing='/img/disk')
    journal.push('mount', path=root, device='/dev/loop7')
    with open(journal.path) as f:
        left = json.load(f)
    os.unlink(journal.path)
    plant(host, left['steps'], name=journal.id)
    monkeypatch.setattr(undo.os.path, 'ismount', lambda path: path == root)
    [result] = sweep.sweep(host['state'].path)
    assert host['commands'] == [
        ('umount', root),
        ('losetup', '--list', '--noheadings', '--output', 'BACK-FILE',
         '/dev/loop7'),
        ('losetup', '--detach', '/dev/loop7')]
    assert [s['kind'] for s in result.undone] == ['mount', 'loop', 'tmpdir',
                                                  'tmpdir']
    assert (result.errors, result.skipped, result.foreign) == ([], None,
                                                               False)
    assert os.listdir(host['state'].work) == []
    assert os.listdir(host['state'].journals) == []


def test_loop_device_reused_since_is_left_alone(host):
    plant(host, [{'kind': 'loop', 'device': '/dev/loop7',
                  'backing': '/img/other'}])
    [result] = sweep.sweep(host['state'].path)
    assert [c[:2] for c in host['commands']] == [('losetup', '--list')]
    assert result.errors == []


def test_no_state_dir_nothing_to_do(tmp_path):
    assert sweep.sweep(str(tmp_path / 'none')) == []


@pytest.mark.parametrize('content', [
    'not json {', '[]', '{"version": 2, "pid": 5, "steps": []}',
    '{"version": 1, "pid": "5", "steps": []}',
    '{"version": 1, "pid": 5, "steps": {"kind": "tmpdir"}}',
    '{"version": 1, "pid": 5, "steps": ["rm -rf /"]}',
    '{"version": 1, "pid": 5, "steps": [{"kind": "shell", "cmd": "id"}]}',
])
def test_corrupt_or_foreign_record_is_reported_not_obeyed(host, content):
    record = os.path.join(host['state'].journals, 'x' + state.RECORD_SUFFIX)
    with open(record, 'w') as f:
        f.write(content)
    [result] = sweep.sweep(host['state'].path)
    assert result.foreign and 'not obeyed' in result.skipped
    assert result.undone == [] and result.record == record
    untouched(host, record)


@pytest.mark.parametrize('step', [
    {'kind': 'tmpdir', 'path': '{precious}'},
    {'kind': 'tmpdir', 'path': '{work}/../../../precious'},
    {'kind': 'tmpdir', 'path': '{work}'},
    {'kind': 'tmpdir', 'path': '{journals}'},
    {'kind': 'tmpdir', 'path': ['{precious}']},
    {'kind': 'mount', 'path': '/etc', 'device': '/dev/loop0'},
    {'kind': 'guestmount', 'path': '/home'},
    {'kind': 'loop', 'device': '/dev/sda'},
    {'kind': 'loop', 'device': '/dev/loop0/../sda'},
    {'kind': 'partx', 'device': '/dev/nvme0n1'},
    {'kind': 'nbd', 'device': '/dev/loop0'},
    {'kind': 'process', 'pid': 4242, 'start': 1, 'marker': 'qemu'},
    {'kind': 'process', 'pid': 1, 'start': 1, 'marker': '{work}/x/e'},
    {'kind': 'process', 'pid': 4242, 'marker': '{work}/x/e'},
    {'kind': 'process', 'pid': '4242', 'start': 1, 'marker': '{work}/x'},
])
def test_step_outside_what_we_create_is_never_obeyed(host, step):
    def fill(value):
        if isinstance(value, list):
            return [fill(v) for v in value]
        if not isinstance(value, str):
            return value
        return value.format(precious=host['precious'],
                            work=host['state'].work,
                            journals=host['state'].journals)
    good = {'kind': 'loop', 'device': '/dev/loop3', 'backing': '/img/disk'}
    record = plant(host, [good, {k: fill(v) for k, v in step.items()}])
    [result] = sweep.sweep(host['state'].path)
    assert result.foreign and 'not obeyed' in result.skipped
    # Not even the valid step of a record that is not ours runs.
    untouched(host, record)
    assert os.path.isdir(host['state'].work)


def test_symlinked_record_is_not_followed(host, tmp_path):
    elsewhere = tmp_path / 'elsewhere.json'
    elsewhere.write_text(json.dumps({
        'version': state.RECORD_VERSION, 'pid': dead_pid(), 'steps': [
            {'kind': 'loop', 'device': '/dev/loop3'}]}))
    link = os.path.join(host['state'].journals, 'link' + state.RECORD_SUFFIX)
    os.symlink(elsewhere, link)
    [result] = sweep.sweep(host['state'].path)
    assert result.foreign
    untouched(host, link, str(elsewhere))


def test_planted_state_dir_is_refused(tmp_path, host):
    os.rmdir(host['state'].journals)
    os.symlink(tmp_path, host['state'].journals)
    with pytest.raises(exception.StateDirUnsafe):
        sweep.sweep(host['state'].path)
    untouched(host)


@pytest.fixture
def sleeper(host):
    """A live process whose command line names a path in the work dir."""
    marker = os.path.join(host['state'].work, 'x', 'export.raw')
    proc = subprocess.Popen([sys.executable, '-c',
                             'import time; time.sleep(60)', marker])
    try:
        for _ in range(500):  # until it has exec'd
            if procfs.process_matches(proc.pid, marker):
                break
            time.sleep(0.01)
        yield proc, marker, procfs.start_time(proc.pid)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def signals(monkeypatch):
    """Signals sent through ``undo``, which are still delivered."""
    sent = []
    real_kill = os.kill

    def kill(pid, sig):
        sent.append((pid, sig))
        real_kill(pid, sig)
    monkeypatch.setattr(undo.os, 'kill', kill)
    return sent


def test_recorded_process_is_stopped(host, sleeper, signals):
    proc, marker, start = sleeper
    plant(host, [{'kind': 'process', 'pid': proc.pid, 'start': start,
                  'marker': marker, 'timeout': 5}])
    [result] = sweep.sweep(host['state'].path)
    assert result.errors == [] and len(result.undone) == 1
    assert signals == [(proc.pid, signal.SIGTERM)]
    proc.wait(timeout=5)


@pytest.mark.parametrize('field', ['start', 'marker'])
def test_process_that_only_reuses_the_pid_is_never_signalled(
        host, sleeper, signals, field):
    proc, marker, start = sleeper
    step = {'kind': 'process', 'pid': proc.pid, 'start': start,
            'marker': marker, 'timeout': 1}
    step[field] = start + 1000 if field == 'start' else \
        os.path.join(host['state'].work, 'y', 'export.raw')
    plant(host, [step])
    sweep.sweep(host['state'].path)
    assert signals == [] and proc.poll() is None
    assert procfs.process_matches(proc.pid, marker, start)


def test_record_of_a_running_injection_is_left_to_it(host, sleeper):
    proc, _marker, start = sleeper
    record = plant(host, [{'kind': 'loop', 'device': '/dev/loop3'}],
                   pid=proc.pid, start=start)
    [result] = sweep.sweep(host['state'].path)
    assert result.skipped == 'belongs to running process %d' % proc.pid
    assert not result.foreign
    untouched(host, record)
    # Once the number is someone else's (another start time), it is swept.
    plant(host, [{'kind': 'loop', 'device': '/dev/loop3'}],
          pid=proc.pid, start=start + 1000)
    [result] = sweep.sweep(host['state'].path)
    assert result.skipped is None and len(result.undone) == 1


def test_failed_undo_keeps_the_record(host, monkeypatch):
    def busy(*cmd, **kwargs):
        raise exception.CommandFailed(action='Unmounting', cmd='umount',
                                      code=32, stderr='target is busy')
    monkeypatch.setattr(utils, 'execute', busy)
    monkeypatch.setattr(undo.os.path, 'ismount', lambda path: True)
    mountpoint = os.path.join(host['state'].work, 'j', 'root')
    record = plant(host, [{'kind': 'mount', 'path': mountpoint}])
    [result] = sweep.sweep(host['state'].path)
    assert 'target is busy' in result.errors[0]
    assert os.path.exists(record)


@pytest.mark.parametrize('caller', ['as_root', 'privsep_wire'])
def test_cleanup_reports_plain_data_either_way(host, request, caller):
    request.getfixturevalue(caller)
    planted = plant(host, [{'kind': 'tmpdir',
                            'path': str(host['precious'])}])
    [result] = api.cleanup()
    assert result['record'] == planted and result['foreign']
    assert 'not obeyed' in result['skipped']
    untouched(host, planted)
