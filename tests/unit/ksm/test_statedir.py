"""The hook/tuner state directory: records, events, lock, saved state."""

import fcntl
import os
import subprocess
import sys

import pytest

from nova_ksm_inject import exception


def test_guest_records(statedir):
    statedir.record_guest({'uuid': 'u1', 'name': 'a', 'mergeable': True,
                           'pid': None})
    statedir.record_guest({'uuid': 'u1', 'pid': 1234})
    statedir.record_guest({'uuid': 'u2', 'name': 'b', 'mergeable': False})
    guests = {g['uuid']: g for g in statedir.guests()}
    assert guests['u1']['name'] == 'a' and guests['u1']['pid'] == 1234
    statedir.remove_guest('u1')
    statedir.remove_guest('u1')  # twice is fine (duplicate release)
    assert [g['uuid'] for g in statedir.guests()] == ['u2']


def test_prune_dead_guests(statedir):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    statedir.record_guest({'uuid': 'gone', 'pid': dead.pid})
    statedir.record_guest({'uuid': 'alive', 'pid': os.getpid()})
    statedir.record_guest({'uuid': 'starting'})
    statedir.prune_dead_guests()
    assert {g['uuid'] for g in statedir.guests()} == {'alive', 'starting'}


def test_events_count_up(statedir):
    assert statedir.event() == {'generation': 0}
    statedir.bump_event('start', 'a')
    assert statedir.bump_event('stop', 'a') == 2
    assert statedir.event()['kind'] == 'stop'


def test_no_temporary_files_left(statedir):
    statedir.bump_event('start', 'a')
    statedir.record_guest({'uuid': 'u'})
    names = os.listdir(statedir.path) + os.listdir(
        os.path.join(statedir.path, 'guests'))
    assert not [n for n in names if n.startswith('.tmp')]


def test_tuner_alive(statedir, clock):
    assert not statedir.tuner_alive()
    statedir.write_tuner({'state': 'boost'})
    assert statedir.tuner_alive()
    clock.sleep(120)
    assert not statedir.tuner_alive()
    statedir.write_tuner({'state': 'stopped'})
    assert not statedir.tuner_alive()


def test_slow_tuner_gets_more_time(statedir, clock):
    statedir.write_tuner({'state': 'boost', 'poll_interval': 30.0})
    clock.sleep(80)
    assert statedir.tuner_alive()
    clock.sleep(20)
    assert not statedir.tuner_alive()


def test_save_once(statedir):
    assert statedir.save_ksm_once({'run': 0})
    assert not statedir.save_ksm_once({'run': 1})
    assert statedir.saved_ksm() == {'run': 0}
    statedir.clear_saved_ksm()
    assert statedir.saved_ksm() is None


def test_lock_times_out_with_a_clear_message(statedir):
    statedir.ensure()
    holder = open(os.path.join(statedir.path, 'lock'), 'a')
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(exception.NovaKsmInjectError,
                           match='another hook or command holds it'):
            with statedir.locked(timeout=0.05):
                pass
    finally:
        holder.close()
    with statedir.locked(timeout=0.05):
        pass


def test_concurrent_hooks_lose_no_event(tmp_path):
    """Eight processes bump the counter 25 times each under the lock."""
    code = ('import sys\n'
            'from nova_ksm_inject.ksm import statedir\n'
            'd = statedir.KsmStateDir(sys.argv[1])\n'
            'for _ in range(25):\n'
            '    with d.locked(timeout=30):\n'
            '        d.bump_event("start", "x")\n')
    procs = [subprocess.Popen([sys.executable, '-c', code,
                               str(tmp_path / 's')]) for _ in range(8)]
    assert [p.wait() for p in procs] == [0] * 8
    from nova_ksm_inject.ksm import statedir
    assert statedir.KsmStateDir(str(tmp_path / 's')).event()[
        'generation'] == 200
