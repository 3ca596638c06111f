"""The oracle: ksmd flat out from a wave's first guest to the end of
the full scan in which it reached its mark, stopped in between (on a
fake KSM sysfs)."""

import time

import pytest

from bench import ksm
from bench import ksm_oracle
from bench import ksm_scenario
from nova_ksm_inject.ksm import host as ksm_host
from tests.unit.ksm import conftest as ksm_fakes


def test_marks_count_like_t95():
    phases = [(1, 0.0, 20.0), (2, 20.0, 40.0), (3, 40.0, 60.0)]
    assert ksm_oracle.marks(phases, [0, 1000, 3000]) == [0, 950, 2900]


@pytest.fixture
def fake(tmp_path):
    return ksm_fakes.FakeKsm(tmp_path / 'ksm')


def guest(wave, i=1):
    return ksm_scenario.Guest(name='bench-w%d-g%d' % (wave, i), wave=wave,
                              tag=i, mib=64)


def wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_it_runs_from_a_first_guest_to_the_scan_after_its_mark(fake,
                                                                tmp_path):
    host = ksm_host.KsmHost(sysfs=fake.sysfs)
    oracle = ksm.POLICIES['oracle'](host, str(tmp_path), marks=[0, 950])
    oracle.start()
    try:
        assert (fake.get('run'), fake.get('sleep_millisecs'),
                fake.get('pages_to_scan')) == ('0', '0', '2000')
        # A lone first guest has nothing to merge: its mark is reached.
        oracle.guest_starting(guest(1))
        assert fake.get('run') == '0'
        oracle.guest_starting(guest(2))
        assert fake.get('run') == '1'
        # Another guest of the same wave changes nothing.
        fake.set('pages_sharing', 900)
        oracle.guest_starting(guest(2, 2))
        assert fake.get('run') == '1'
        time.sleep(5 * ksm_oracle.POLL_SECONDS)
        assert fake.get('run') == '1'
        fake.set('pages_sharing', 950)
        # At the mark it goes on to the end of the full scan in progress:
        # only then was every new page visited twice.
        assert wait_for(lambda: len(oracle.switches) == 2)
        time.sleep(5 * ksm_oracle.POLL_SECONDS)
        assert fake.get('run') == '1'
        fake.set('full_scans', 1)
        assert wait_for(lambda: fake.get('run') == '0')
        # A wave past the marks (none given) runs to the end.
        oracle.guest_starting(guest(3))
        assert fake.get('run') == '1'
    finally:
        oracle.stop()
    assert [(what, wave, saved) for _, what, wave, saved
            in oracle.report()['switches']] == [
        ('run', 2, 0), ('mark', 2, 950), ('stop', 2, 950), ('run', 3, 950)]
    assert oracle.report()['marks'] == [0, 950]
