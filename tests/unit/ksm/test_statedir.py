"""The hook/tuner state directory: records, events, lock, saved state."""

import fcntl
import os
import subprocess
import sys

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.ksm import control


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


def test_reconcile_forgets_gone_and_remembers_processes(statedir):
    for uuid in ('gone', 'alive', 'starting'):
        statedir.record_guest({'uuid': uuid, 'name': uuid, 'pid': None})
    records = {r['uuid']: r for r in statedir.guests()}
    guests = control.Guests(
        live=[(records['alive'], 4242), (records['starting'], None)],
        gone=[(records['gone'], 'its QEMU process is gone')], others=[])
    forgotten = statedir.reconcile(guests)
    assert [r['uuid'] for r in forgotten] == ['gone']
    left = {r['uuid']: r for r in statedir.guests()}
    assert set(left) == {'alive', 'starting'}
    assert left['alive']['qemu_pid'] == 4242
    assert 'qemu_pid' not in left['starting']


def test_reconcile_keeps_a_record_a_hook_rewrote_meanwhile(statedir, clock):
    statedir.record_guest({'uuid': 'u', 'name': 'vm', 'pid': None})
    stale = statedir.guests()[0]
    clock.sleep(5)
    # The guest started again (its earlier release was lost).
    statedir.record_guest({'uuid': 'u', 'name': 'vm', 'pid': None})
    statedir.reconcile(control.Guests(live=[], others=[],
                                      gone=[(stale, 'old run is gone')]))
    assert [r['uuid'] for r in statedir.guests()] == ['u']


def test_a_new_start_clears_what_an_earlier_run_left(statedir, clock):
    statedir.record_guest({'uuid': 'u', 'name': 'vm', 'pid': None})
    statedir.record_guest({'uuid': 'u', 'pid': 1234})
    statedir.reconcile(control.Guests(
        live=[(statedir.guests()[0], 99)], gone=[], others=[]))
    clock.sleep(60)
    statedir.record_guest({'uuid': 'u', 'name': 'vm', 'pid': None})
    record = statedir.guests()[0]
    assert 'pid' not in record and 'qemu_pid' not in record
    assert record['since'] == clock()


def test_reconcile_skips_a_busy_lock(statedir):
    statedir.record_guest({'uuid': 'gone', 'pid': None})
    guests = control.Guests(live=[], others=[],
                            gone=[(statedir.guests()[0], 'gone')])
    with statedir.locked():
        # Another holder (here: the same process, another descriptor).
        assert statedir.reconcile(guests, timeout=0.05) == []
    assert statedir.reconcile(guests) != []


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
