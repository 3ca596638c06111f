"""ksmd's nice value while the tuner boosts, against a fake priority: a
unit test never changes the priority of a real process."""

import dataclasses
import errno
import logging

import pytest

from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import policy
from nova_ksm_inject.ksm import processes
from nova_ksm_inject.ksm import settings as ksm_settings
from nova_ksm_inject.ksm import tuner as ksm_tuner

KSMD = 37  # the fake tree's ksmd (conftest.FakeProc.add_ksmd)


class FakePriority(object):
    """Nice values by pid; ``refuse`` makes every set fail with EPERM."""

    def __init__(self, nice=5):
        self.nice = {KSMD: nice}
        self.refuse = False
        self.sets = []

    def get(self, pid):
        return self.nice[pid]

    def set(self, pid, nice):
        if self.refuse:
            raise PermissionError(errno.EPERM, 'Operation not permitted')
        self.sets.append((pid, nice))
        self.nice[pid] = nice


@pytest.fixture
def fake_priority():
    return FakePriority()


@pytest.fixture
def make_tuner(settings, fake_ksm, fake_proc, statedir, clock,
               fake_priority):
    def _make(priority=True, **overrides):
        overrides.setdefault('boost_ksmd_nice', 0)
        return ksm_tuner.Tuner(
            dataclasses.replace(settings, **overrides),
            ksm_host.KsmHost(fake_ksm.sysfs), statedir, clock=clock,
            sleeper=clock.sleep, proc_root=fake_proc.root,
            priority=processes.KsmdPriority(
                KSMD, fake_priority.get, fake_priority.set)
            if priority else None)
    return _make


def boost_then_settle(tuner, fake_ksm, clock):
    """Steps until the tuner settles; the states seen."""
    states = []
    for merged in (0, 8000, 12000, 12010, 12010, 12010):
        clock.sleep(1.0)
        fake_ksm.set('full_scans', int(fake_ksm.get('full_scans')) + 1)
        fake_ksm.set('pages_sharing', merged)
        states.append(tuner.step().state)
    return states


def test_a_boost_raises_ksmds_priority_and_settling_puts_it_back(
        make_tuner, fake_ksm, fake_proc, clock, statedir, fake_priority,
        caplog):
    caplog.set_level(logging.INFO, logger='nova_ksm_inject')
    tuner = make_tuner()
    tuner.start()
    tuner.step()
    assert fake_priority.nice[KSMD] == 5  # idle: left alone
    fake_proc.add(900, mergeable=True, rss_pages=16384)
    assert tuner.step().state == policy.BOOST
    assert fake_priority.nice[KSMD] == 0
    assert statedir.saved_ksmd_nice() == {'pid': KSMD, 'nice': 5}
    assert 'ksmd (pid 37) at nice 0 while the boost runs (was 5)' in \
        caplog.text
    assert boost_then_settle(tuner, fake_ksm, clock)[-1] == policy.SETTLED
    assert fake_priority.nice[KSMD] == 5
    assert statedir.saved_ksmd_nice() is None
    assert fake_priority.sets == [(KSMD, 0), (KSMD, 5)]


def test_stopping_during_a_boost_puts_the_priority_back(
        make_tuner, fake_proc, statedir, fake_priority):
    fake_proc.add(901, mergeable=True, rss_pages=16384)
    tuner = make_tuner(restore_on_exit=False)
    polls = iter([False, True])
    tuner.run(lambda: next(polls))
    assert tuner.decision.state == policy.BOOST
    assert fake_priority.sets == [(KSMD, 0), (KSMD, 5)]
    assert statedir.saved_ksmd_nice() is None


def test_a_tuner_killed_during_a_boost_is_undone_by_the_next(
        make_tuner, fake_proc, statedir, fake_priority):
    fake_proc.add(902, mergeable=True, rss_pages=16384)
    killed = make_tuner()
    killed.start()
    killed.step()  # then SIGKILL: no stop()
    assert fake_priority.nice[KSMD] == 0
    fake_proc.remove(902)
    make_tuner().start()
    assert fake_priority.nice[KSMD] == 5
    assert statedir.saved_ksmd_nice() is None


def test_a_record_about_another_ksmd_is_dropped(make_tuner, statedir,
                                                fake_priority):
    statedir.save_ksmd_nice(4242, 5)  # before a reboot, say
    make_tuner().start()
    assert fake_priority.sets == []
    assert statedir.saved_ksmd_nice() is None


def test_ksmds_priority_is_never_lowered(make_tuner, fake_proc, statedir,
                                         fake_priority):
    fake_priority.nice[KSMD] = -5  # the operator's choice
    fake_proc.add(903, mergeable=True, rss_pages=16384)
    tuner = make_tuner()
    tuner.start()
    assert tuner.step().state == policy.BOOST
    tuner.stop()
    assert fake_priority.sets == []
    assert statedir.saved_ksmd_nice() is None


def test_by_default_ksmd_is_left_alone():
    assert ksm_settings.KsmSettings().boost_ksmd_nice is None


def test_an_empty_option_leaves_ksmd_alone(make_tuner, fake_proc,
                                           fake_priority):
    fake_proc.add(904, mergeable=True, rss_pages=16384)
    tuner = make_tuner(boost_ksmd_nice=None)
    tuner.start()
    assert tuner.step().state == policy.BOOST
    tuner.stop()
    assert fake_priority.sets == []


def test_a_refused_renice_is_said_once_and_the_boost_goes_on(
        make_tuner, fake_ksm, fake_proc, clock, statedir, fake_priority,
        caplog):
    fake_priority.refuse = True
    fake_proc.add(905, mergeable=True, rss_pages=16384)
    tuner = make_tuner()
    tuner.start()
    assert tuner.step().state == policy.BOOST
    assert tuner.step().state == policy.BOOST
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING]
    assert warnings == [
        'Cannot raise the priority of ksmd (pid 37): Operation not '
        'permitted; boosts get less of a core than cpu_budget_percent '
        'under load. Run the tuner as root, or unset [ksm] '
        'boost_ksmd_nice']
    assert fake_priority.nice[KSMD] == 5
    assert statedir.saved_ksmd_nice() is None
    assert int(fake_ksm.get('pages_to_scan')) > 100


def test_a_fake_procfs_never_renices_a_real_process(make_tuner):
    assert make_tuner(priority=False).priority is None
