"""Guest counting: hook records matched to the processes that run."""

import pytest

from nova_ksm_inject.ksm import control
from nova_ksm_inject.ksm import processes

UUID = '5f1c2b9e-7a61-4d0e-9d51-0d5d3c9a1f00'
NOW = 10000.0


def record(name='vm', uuid=UUID, since=NOW - 5, **extra):
    return dict({'uuid': uuid, 'name': name, 'mergeable': True,
                 'since': since}, **extra)


def qemu(pid, name='vm', uuid=UUID):
    return {pid: processes.QemuGuest(pid, name, uuid)}


def test_a_record_and_its_qemu_process_count_once():
    guests = control.match_guests([record()], qemu(700), {700: {}}, NOW, 120)
    assert guests.live == [(record(), 700)] and guests.others == []
    assert guests.count == 1


@pytest.mark.parametrize('running', [
    qemu(700, name='renamed'),  # by UUID
    qemu(700, uuid=None),  # by name (no -uuid: a synthetic guest)
])
def test_records_match_by_uuid_or_name(running):
    guests = control.match_guests([record()], running, {700: {}}, NOW, 120)
    assert guests.live == [(record(), 700)] and guests.count == 1


def test_mergeable_processes_without_record_count_too():
    guests = control.match_guests([record()], qemu(700), {700: {}, 800: {}},
                                  NOW, 120)
    assert guests.others == [800] and guests.count == 2


def test_a_starting_guest_counts_until_the_grace_period_ends():
    starting = record(since=NOW - 119)
    guests = control.match_guests([starting], {}, {}, NOW, 120)
    assert guests.live == [(starting, None)] and guests.count == 1
    late = record(since=NOW - 121)
    guests = control.match_guests([late], {}, {}, NOW, 120)
    assert guests.count == 0
    assert guests.gone[0][1].startswith('no QEMU process 121 s after')


def test_a_guest_whose_process_was_seen_is_gone_at_once():
    ran = record(since=NOW - 1, qemu_pid=700)
    guests = control.match_guests([ran], {}, {}, NOW, 120)
    assert guests.count == 0
    assert guests.gone == [(ran, 'its QEMU process (pid 700) is gone and '
                                 'no release event came')]


def test_hook_pid_alive_or_dead(fake_proc):
    fake_proc.add(900, cmdline=['some-wrapper'])
    alive, dead = record(name='a', uuid='a', pid=900), \
        record(name='b', uuid='b', pid=901)
    guests = control.match_guests([alive, dead], {}, {900: {}}, NOW, 120,
                                  fake_proc.root)
    assert guests.live == [(alive, 900)] and guests.others == []
    assert [r['uuid'] for r, _ in guests.gone] == ['b']


def test_unmergeable_guests_are_live_but_not_counted():
    pinned = record(mergeable=False)
    guests = control.match_guests([pinned], qemu(700), {}, NOW, 120)
    assert guests.live == [(pinned, 700)] and guests.count == 0


def test_hook_count_ignores_stale_records(statedir, fake_proc, clock):
    statedir.record_guest({'uuid': 'old', 'name': 'old', 'mergeable': True,
                           'pid': None})
    clock.sleep(300)
    statedir.record_guest({'uuid': 'new', 'name': 'new', 'mergeable': True,
                           'pid': None})
    fake_proc.add(950, mergeable=True, cmdline=[
        '/usr/bin/qemu-system-x86_64', '-name', 'guest=new', '-uuid', 'new'])
    assert control.mergeable_guest_count(statedir, fake_proc.root,
                                         grace=120) == 1
    # Counting never writes: the hook holds the lock while it counts.
    assert len(statedir.guests()) == 2
