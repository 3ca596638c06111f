"""The tuner loop against fake sysfs and procfs trees and a fake clock."""

import dataclasses
import os

import pytest

from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import coverage
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import policy
from nova_ksm_inject.ksm import tuner as ksm_tuner


@pytest.fixture
def make_tuner(settings, fake_ksm, fake_proc, statedir, clock):
    def _make(**overrides):
        tuner_settings = dataclasses.replace(settings, **overrides)
        return ksm_tuner.Tuner(tuner_settings,
                               ksm_host.KsmHost(fake_ksm.sysfs), statedir,
                               clock=clock, sleeper=clock.sleep,
                               proc_root=fake_proc.root)
    return _make


def advance(fake_ksm, fake_proc, clock, scans=0, merged=None, ticks=None):
    """One second of ksmd work."""
    clock.sleep(1.0)
    fake_ksm.set('full_scans', int(fake_ksm.get('full_scans')) + scans)
    if merged is not None:
        fake_ksm.set('pages_sharing', merged)
    if ticks is not None:
        fake_proc.set_ticks(37, ticks)


def test_idle_host_keeps_ksmd_stopped(make_tuner, fake_ksm, statedir):
    tuner = make_tuner()
    tuner.start()
    assert tuner.step().state == policy.IDLE
    assert fake_ksm.get('run') == '0'
    assert statedir.tuner()['state'] == policy.IDLE
    assert statedir.saved_ksm()['pages_to_scan'] == 100


def test_new_process_boosts_then_settles(make_tuner, fake_ksm, fake_proc,
                                         clock, statedir):
    tuner = make_tuner()
    tuner.start()
    tuner.step()
    fake_proc.add(900, mergeable=True, rss_pages=16384)
    decision = tuner.step()
    assert decision.state == policy.BOOST
    assert fake_ksm.get('run') == '1'
    assert fake_ksm.get('sleep_millisecs') == '20'
    assert int(fake_ksm.get('pages_to_scan')) == decision.pages_to_scan
    for merged in (0, 8000, 12000, 12010, 12010):
        advance(fake_ksm, fake_proc, clock, scans=1, merged=merged)
        decision = tuner.step()
    assert decision.state == policy.SETTLED
    assert fake_ksm.get('sleep_millisecs') == '200'
    assert statedir.tuner()['state'] == policy.SETTLED
    fake_proc.remove(900)
    advance(fake_ksm, fake_proc, clock)
    assert tuner.step().state == policy.IDLE
    assert fake_ksm.get('run') == '0'


def test_hook_event_boosts(make_tuner, fake_ksm, fake_proc, clock,
                           statedir):
    statedir.record_guest({'uuid': 'g', 'name': 'vm', 'mergeable': True})
    tuner = make_tuner()
    tuner.start()
    assert tuner.step().state == policy.BOOST  # guests found at start
    for merged in (0, 100, 100, 100):
        advance(fake_ksm, fake_proc, clock, scans=1, merged=merged)
        tuner.step()
    assert tuner.decision.state == policy.SETTLED
    statedir.bump_event('start', 'vm2')
    advance(fake_ksm, fake_proc, clock)
    decision = tuner.step()
    assert decision.state == policy.BOOST
    assert decision.reason == 'guest started'


def test_budget_is_measured_from_ksmd(make_tuner, fake_ksm, fake_proc,
                                      clock):
    fake_proc.add(901, mergeable=True)
    tuner = make_tuner(cpu_budget_percent=30)
    tuner.start()
    tuner.step()
    first = int(fake_ksm.get('pages_to_scan'))
    # ksmd burnt a whole core while the budget is 30%.
    fake_ksm.set('pages_scanned', 0)
    advance(fake_ksm, fake_proc, clock, ticks=procfs.CLOCK_TICKS)
    decision = tuner.step()
    assert decision.cpu_percent == pytest.approx(100.0)
    assert int(fake_ksm.get('pages_to_scan')) < first


def test_writes_only_when_the_decision_changes(make_tuner, fake_ksm,
                                               fake_proc, clock):
    tuner = make_tuner()
    tuner.start()
    writes = []
    real = tuner.host.apply
    tuner.host.apply = lambda knobs, **kw: writes.append(knobs) or real(
        knobs, **kw)
    for _ in range(3):
        advance(fake_ksm, fake_proc, clock)
        tuner.step()
    assert len(writes) == 1


def test_static_policy_applies_the_operator_knobs(make_tuner, fake_ksm,
                                                  fake_proc):
    fake_proc.add(902, mergeable=True)
    tuner = make_tuner(policy='static', pages_to_scan=2500,
                       sleep_millisecs=40)
    tuner.start()
    assert tuner.step().state == policy.STATIC
    assert fake_ksm.get('pages_to_scan') == '2500'
    assert fake_ksm.get('sleep_millisecs') == '40'


def test_run_stops_and_restores(make_tuner, fake_ksm, fake_proc, clock,
                                statedir):
    fake_proc.add(903, mergeable=True)
    tuner = make_tuner(restore_on_exit=True)
    polls = iter([False, False, True])
    tuner.run(lambda: next(polls))
    assert fake_ksm.get('run') == '0'
    assert fake_ksm.get('pages_to_scan') == '100'
    assert statedir.saved_ksm() is None
    assert statedir.tuner()['state'] == 'stopped'
    assert not statedir.tuner_alive()


def test_stop_during_boost_leaves_a_calm_rate(make_tuner, fake_ksm,
                                              fake_proc):
    fake_proc.add(904, mergeable=True)
    tuner = make_tuner(restore_on_exit=False)
    polls = iter([False, True])
    tuner.run(lambda: next(polls))
    assert fake_ksm.get('run') == '1'
    assert fake_ksm.get('sleep_millisecs') == '200'


def test_errors_do_not_stop_the_loop(make_tuner, fake_ksm, fake_proc,
                                     monkeypatch, caplog):
    import os
    fake_proc.add(905, mergeable=True)
    tuner = make_tuner()
    monkeypatch.setattr(os, 'access', lambda path, mode: False)
    polls = iter([False, False, True])
    tuner.run(lambda: next(polls))
    assert 'KSM tuning failed' in caplog.text
    assert fake_ksm.get('run') == '0'


def test_knobs_changed_behind_the_tuner_are_set_again(make_tuner, fake_ksm,
                                                      fake_proc, clock,
                                                      caplog):
    caplog.set_level('INFO', logger='nova_ksm_inject')
    fake_proc.add(906, mergeable=True)
    tuner = make_tuner()
    tuner.start()
    boost = tuner.step().pages_to_scan
    fake_ksm.set('pages_to_scan', 100)  # a hook fell back to static
    advance(fake_ksm, fake_proc, clock)
    tuner.step()
    assert int(fake_ksm.get('pages_to_scan')) != 100
    assert 'changed behind the tuner' in caplog.text
    assert boost


def qemu_cmdline(name, uuid):
    return ['/usr/bin/qemu-system-x86_64', '-name',
            'guest=%s,debug-threads=on' % name, '-uuid', uuid, '-m', '64']


def test_lost_release_events_do_not_keep_ksmd_running(
        make_tuner, fake_ksm, fake_proc, clock, statedir):
    # Two guests the hook saw start; their QEMU processes run.
    for pid, name in ((1001, 'vm-a'), (1002, 'vm-b')):
        statedir.record_guest({'uuid': 'uuid-' + name, 'name': name,
                               'mergeable': True, 'pid': None})
        fake_proc.add(pid, mergeable=True, comm='qemu-system-x86',
                      cmdline=qemu_cmdline(name, 'uuid-' + name))
    tuner = make_tuner()
    tuner.start()
    assert tuner.step().state == policy.BOOST
    assert statedir.tuner()['guests'] == 2  # each guest once
    # libvirtd was killed: the guests are gone, no release event came.
    fake_proc.remove(1001)
    fake_proc.remove(1002)
    advance(fake_ksm, fake_proc, clock)
    decision = tuner.step()
    assert (decision.state, fake_ksm.get('run')) == (policy.IDLE, '0')
    assert statedir.guests() == []


def test_a_guest_in_prepare_keeps_ksmd_until_the_grace_period(
        make_tuner, fake_ksm, fake_proc, clock, statedir):
    statedir.record_guest({'uuid': 'u', 'name': 'slow', 'mergeable': True,
                           'pid': None})
    tuner = make_tuner(guest_record_grace_seconds=30)
    tuner.start()
    assert tuner.step().state == policy.BOOST
    clock.sleep(29)
    assert tuner.step().state == policy.BOOST
    clock.sleep(2)
    assert tuner.step().state == policy.IDLE
    assert fake_ksm.get('run') == '0'


def test_the_tuner_says_why_it_stopped_at_a_loss(make_tuner, fake_ksm,
                                                 fake_proc, clock, statedir,
                                                 caplog):
    caplog.set_level('INFO', logger='nova_ksm_inject')
    fake_proc.add(1100, mergeable=True, rss_pages=10000)
    tuner = make_tuner()
    tuner.start()
    tuner.step()
    fake_ksm.set('pages_unshared', 10000)
    fake_ksm.set('general_profit', -640000)
    for _ in range(4):
        advance(fake_ksm, fake_proc, clock, scans=1)
        decision = tuner.step()
    assert decision.state == policy.LOSS
    assert fake_ksm.get('run') == '0'
    published = statedir.tuner()
    assert published['state'] == 'loss'
    assert published['stopped_because'].startswith('merging does not pay')
    assert published['profit_bytes'] == -640000
    assert 'KSM loss: merging does not pay' in caplog.text


def test_a_hook_event_cuts_the_wait_short(make_tuner, statedir, clock):
    tuner = make_tuner(poll_interval=5.0)
    tuner.start()
    tuner.step()
    began = clock()
    tuner.wait(5.0)
    assert clock() - began == pytest.approx(5.0)
    real_sleep = clock.sleep

    def sleep_then_start(seconds):
        real_sleep(seconds)
        if clock() - began >= 5.3:
            statedir.bump_event('start', 'vm')
    tuner.sleeper = sleep_then_start
    tuner.wait(5.0)
    # Noticed at the next tenth of a second, not after 5 s.
    assert clock() - began == pytest.approx(5.3, abs=0.11)


def test_samples_count_the_guest_pages_ksmd_has_not_visited(
        make_tuner, fake_proc):
    tuner = make_tuner()
    tuner.start()
    fake_proc.add(906, mergeable=True, rss_pages=16384, rmap=4000)
    # 2,000 pages of its own memory (QEMU's, outside the mergeable
    # mapping) are never visited: not counted.
    fake_proc.add(907, mergeable=True, rss_pages=10192, rmap=8192,
                  own_pages=2000)
    sample = tuner.sample()
    assert (sample.guest_pages, sample.unvisited) == (26576, 12384)
    assert sample.process_merging == {906: 0, 907: 0}
    # A kernel without ksm_stat's rmap items (before 6.1): unknown.
    fake_proc.add(908, mergeable=True, rss_pages=100)
    fake_proc._write(908, 'ksm_stat', 'ksm_merging_pages 0\n'
                     'ksm_mergeable: yes\n')
    sample = tuner.sample()
    assert sample.guest_pages == 26676 and sample.unvisited is None


def test_a_process_own_memory_is_read_once_unless_boosting(
        make_tuner, fake_proc, clock):
    """smaps walks the page tables: read when a process is new, and
    every OWN_MEMORY_REFRESH seconds while boosting."""
    tuner = make_tuner()
    tuner.start()
    fake_proc.add(906, mergeable=True, rss_pages=3000, rmap=0,
                  own_pages=2000)
    assert tuner.sample().unvisited == 1000
    # The guest fills its memory; its own stays 2,000 pages.
    fake_proc.add(906, mergeable=True, rss_pages=18000, rmap=16000,
                  own_pages=2000)
    os.unlink(os.path.join(fake_proc.root, '906', 'smaps'))
    clock.sleep(60)
    assert tuner.sample().unvisited == 0  # not read again: settled
    fake_proc.add(906, mergeable=True, rss_pages=18000, rmap=16000,
                  own_pages=1000)
    tuner.policy.state = policy.BOOST
    clock.sleep(coverage.OWN_MEMORY_REFRESH)
    assert tuner.sample().unvisited == 1000
