"""The KSM benchmark's scenario: schedule, guests, launcher, runner."""

import os
import threading

import pytest

from bench import ksm_launcher
from bench import ksm_scenario
from nova_ksm_inject.ksm.hook import handler
from tests.lib import ksm_guest


def test_default_schedule_arrives_over_three_quarters_then_leaves():
    events = ksm_scenario.Scenario().schedule()
    assert [(e.time, e.kind, e.wave) for e in events] == [
        (0.0, 'arrive', 1), (45.0, 'arrive', 2), (90.0, 'arrive', 3),
        (135.0, 'leave', 1), (150.0, 'leave', 2), (165.0, 'leave', 3)]


def test_phases_run_from_each_arrival_to_the_next_event():
    assert ksm_scenario.Scenario(waves=2, duration=100).phases() == [
        (1, 0.0, 37.5), (2, 37.5, 75.0)]


def test_page_counts_and_expected_saving():
    scenario = ksm_scenario.Scenario(guest_mib=256, identical=0.85)
    assert scenario.pages_per_guest == 65536
    assert scenario.identical_pages == 55705
    assert scenario.expected_saving(4) == 3 * 55705
    assert scenario.expected_saving(0) == 0


def test_wave_guests_have_unique_tags_and_stable_uuids():
    scenario = ksm_scenario.Scenario(guests=3)
    first = ksm_scenario.wave_guests(scenario, 1)
    second = ksm_scenario.wave_guests(scenario, 2)
    assert [g.tag for g in first + second] == [1, 2, 3, 4, 5, 6]
    assert second[0].name == 'bench-w2-g1'
    assert second[0].uuid == ksm_scenario.wave_guests(scenario, 2)[0].uuid
    assert len({g.uuid for g in first + second}) == 6


def test_domain_xml_reads_back_through_the_hook_parser():
    guest = ksm_scenario.Guest(name='bench-w1-g2', wave=1, tag=2, mib=256)
    domain = handler.parse_domain(guest.xml())
    assert (domain.name, domain.uuid) == ('bench-w1-g2', guest.uuid)
    assert domain.mergeable and domain.memory_kib == 256 * 1024


def read(path, binary=False):
    with open(path, 'rb' if binary else 'r') as f:
        return f.read()


def test_launcher_starts_guests_that_look_like_qemu(tmp_path):
    scenario = ksm_scenario.Scenario(guest_mib=4)
    launcher = ksm_launcher.GuestLauncher(scenario, str(tmp_path))
    guest = ksm_scenario.wave_guests(scenario, 1)[0]
    try:
        launcher.spawn(guest)
        launcher.wait_ready(guest.name)
        pid = launcher.pids()[guest.name]
        args = read('/proc/%d/cmdline' % pid, True).split(b'\0')
        # What ksmtuned's pgrep -f '^qemu-system.*-enable-kvm' matches.
        assert args[0] == b'qemu-system-x86_64'
        assert b'-enable-kvm' in args
        assert b'guest=bench-w1-g1' in args
        assert read('/proc/%d/comm' % pid).strip() == 'qemu-system-x86'
        if os.path.exists('/proc/%d/ksm_stat' % pid):
            assert 'ksm_mergeable: yes' in read('/proc/%d/ksm_stat' % pid)
    finally:
        launcher.stop_all()
    assert launcher.pids() == {}
    assert not os.path.exists('/proc/%d' % pid)


def test_a_guest_that_dies_early_is_an_error(tmp_path):
    scenario = ksm_scenario.Scenario(guest_mib=4)
    launcher = ksm_launcher.GuestLauncher(scenario, str(tmp_path))
    launcher.env['PYTHONPATH'] = str(tmp_path)  # cannot import the guest
    guest = ksm_scenario.wave_guests(scenario, 1)[0]
    launcher.spawn(guest)
    try:
        with pytest.raises(ksm_scenario.BenchFailed,
                           match='exited before filling'):
            launcher.wait_ready(guest.name)
    finally:
        launcher.stop_all()


class RecordingPolicy(object):
    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def _record(self, what, guest):
        with self.lock:
            self.calls.append((what, guest.name))

    def guest_starting(self, guest):
        self._record('starting', guest)

    def guest_started(self, guest):
        self._record('started', guest)

    def guest_stopped(self, guest):
        self._record('stopped', guest)


class FakeLauncher(object):
    def __init__(self):
        self.running = set()

    def spawn(self, guest):
        self.running.add(guest.name)

    def wait_ready(self, name):
        assert name in self.running

    def stop(self, name):
        self.running.remove(name)


class Clock(object):
    """Moves only when the runner waits."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Halt(object):
    def __init__(self, clock):
        self.clock = clock

    def wait(self, seconds):
        self.clock.now += seconds
        return False


def test_runner_plays_every_event_and_tells_the_policy():
    scenario = ksm_scenario.Scenario(waves=2, guests=2, duration=40)
    policy, launcher, clock = RecordingPolicy(), FakeLauncher(), Clock()
    runner = ksm_scenario.ScenarioRunner(scenario, launcher, policy, clock)
    runner.run(clock(), Halt(clock))
    assert [(e['time'], e['kind'], e['wave']) for e in runner.log] == [
        (0.0, 'arrive', 1), (15.0, 'arrive', 2), (30.0, 'leave', 1),
        (35.0, 'leave', 2)]
    assert clock() == 140.0  # waited until the end of the run
    assert launcher.running == set()
    for name in ('bench-w1-g1', 'bench-w2-g2'):
        calls = [c for c, n in policy.calls if n == name]
        assert calls == ['starting', 'started', 'stopped']


def test_runner_stops_early_when_told():
    scenario = ksm_scenario.Scenario(waves=2, guests=1, duration=40)
    clock = Clock()

    class Stop(object):
        def wait(self, seconds):
            return True

    runner = ksm_scenario.ScenarioRunner(scenario, FakeLauncher(),
                                         RecordingPolicy(), clock)
    runner.run(clock(), Stop())
    assert runner.log == []


def test_runner_reraises_a_guest_failure():
    class Broken(FakeLauncher):
        def wait_ready(self, name):
            raise RuntimeError('guest %s died' % name)

    scenario = ksm_scenario.Scenario(waves=1, guests=2, duration=10)
    clock = Clock()
    runner = ksm_scenario.ScenarioRunner(scenario, Broken(),
                                         RecordingPolicy(), clock)
    with pytest.raises(RuntimeError, match='died'):
        runner.run(clock(), Halt(clock))


def test_guest_module_is_standard_library_only():
    # It runs as "qemu-system-x86_64", which may not find the venv.
    source = read(ksm_guest.__file__)
    imports = {line.split()[1] for line in source.splitlines()
               if line.startswith(('import ', 'from '))}
    assert imports <= {'argparse', 'ctypes', 'mmap', 'os', 'random',
                       'select', 'signal', 'struct', 'sys'}


def test_churn_arrives_every_interval_and_leaves_after_its_lifetime():
    churn = ksm_scenario.Scenario(kind='churn', guests=1, duration=60,
                                  arrive_every=10, lifetime=25)
    events = [(e.time, e.kind, e.wave) for e in churn.schedule()]
    assert events[:5] == [(0, 'arrive', 1), (10, 'arrive', 2),
                          (20, 'arrive', 3), (25, 'leave', 1),
                          (30, 'arrive', 4)]
    assert len([e for e in events if e[1] == 'arrive']) == 6
    assert churn.total_guests == 6 and churn.peak_guests == 3
    # A phase ends at the next event (here guest 3 leaving).
    assert churn.phases()[-1] == (6, 50, 55)


def test_churn_leaves_before_the_next_arrives_at_the_same_time():
    churn = ksm_scenario.Scenario(kind='churn', guests=1, duration=40,
                                  arrive_every=10, lifetime=20)
    assert [(e.time, e.kind) for e in churn.schedule()][2:4] == [
        (20, 'leave'), (20, 'arrive')]
