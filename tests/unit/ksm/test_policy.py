"""The scan-rate policies, fed synthetic samples."""

import dataclasses

import pytest

from nova_ksm_inject.ksm import policy
from nova_ksm_inject.ksm import settings as ksm_settings


def make(**kwargs):
    return policy.AdaptivePolicy(ksm_settings.KsmSettings(**kwargs))


class Host(object):
    """Builds successive samples: one poll per second."""

    def __init__(self, **fields):
        self.sample = policy.Sample(time=0.0, **fields)

    def next(self, dt=1.0, **changes):
        self.sample = dataclasses.replace(
            self.sample, time=self.sample.time + dt, started=False,
            **changes)
        return self.sample


def test_idle_without_guests():
    decision = make().decide(policy.Sample(time=0.0))
    assert (decision.state, decision.run) == (policy.IDLE, 0)
    assert decision.knobs() == {'run': 0}


def test_enabled_true_keeps_ksmd_running_calmly():
    decision = make(enabled='true').decide(policy.Sample(time=0.0))
    assert decision.run == 1
    assert decision.sleep_millisecs == policy.AdaptivePolicy.SETTLED_SLEEP_MS


def test_enabled_false_stops_whatever_happens():
    decision = make(enabled='false').decide(
        policy.Sample(time=0.0, guests=3, started=True))
    assert (decision.state, decision.run) == (policy.DISABLED, 0)


def test_guest_start_boosts_within_budget():
    tuner = make(cpu_budget_percent=50)
    decision = tuner.decide(policy.Sample(time=0.0, guests=1, started=True,
                                          pages_scanned=0))
    assert decision.state == policy.BOOST and decision.run == 1
    assert decision.sleep_millisecs == 20
    # 45% of a core at 500k pages per CPU second, 20 ms sleeps.
    assert decision.pages_to_scan == pytest.approx(8181, rel=0.01)
    assert decision.reason == 'guest started'


def test_boost_sizes_batches_from_the_measured_rate():
    tuner = make(cpu_budget_percent=50)
    host = Host(guests=1, started=True, pages_scanned=0)
    tuner.decide(host.sample)
    # ksmd scanned 2M pages with 0.4 CPU seconds: 5M pages/CPU second.
    decision = tuner.decide(host.next(pages_scanned=2000000, ksmd_cpu=0.4))
    assert tuner.rate == pytest.approx(0.5 * 500000 + 0.5 * 5000000)
    assert decision.cpu_percent == pytest.approx(40.0)
    assert decision.pages_to_scan > 8181 * 4


def test_boost_backs_off_when_over_budget():
    tuner = make(cpu_budget_percent=20)
    host = Host(guests=1, started=True, pages_scanned=None)
    first = tuner.decide(host.sample).pages_to_scan
    # No scan counter (Linux < 6.7): follow the CPU; 80% is 4x over.
    second = tuner.decide(host.next(ksmd_cpu=0.8)).pages_to_scan
    assert second == pytest.approx(first / 2, rel=0.01)


def test_boost_does_not_push_when_batches_cover_everything():
    tuner = make(cpu_budget_percent=50)
    host = Host(guests=1, started=True, pages_scanned=None, tracked=100)
    first = tuner.decide(host.sample).pages_to_scan
    second = tuner.decide(host.next(ksmd_cpu=0.01)).pages_to_scan
    assert second == first


def scan(tuner, host, scans, merged):
    return tuner.decide(host.next(full_scans=host.sample.full_scans + scans,
                                  merged=merged))


def test_plateau_after_two_quiet_full_scans():
    tuner = make()
    host = Host(guests=4, started=True, tracked=60000)
    tuner.decide(host.sample)
    assert scan(tuner, host, 1, 0).state == policy.BOOST  # checksums only
    assert scan(tuner, host, 1, 30000).state == policy.BOOST
    assert scan(tuner, host, 1, 44000).state == policy.BOOST
    assert scan(tuner, host, 1, 44100).state == policy.BOOST
    settled = scan(tuner, host, 1, 44150)
    assert settled.state == policy.SETTLED
    assert 'plateau' in settled.reason
    assert settled.sleep_millisecs == 200
    # 60000 pages once per 300 s with 200 ms sleeps: 40 pages, floor 64.
    assert settled.pages_to_scan == 64


def test_no_plateau_before_three_full_scans():
    tuner = make()
    host = Host(guests=1, started=True)
    tuner.decide(host.sample)
    assert scan(tuner, host, 2, 0).state == policy.BOOST


def test_polls_without_full_scan_keep_boosting():
    tuner = make()
    host = Host(guests=1, started=True)
    tuner.decide(host.sample)
    for _ in range(10):
        assert tuner.decide(host.next()).state == policy.BOOST


def settle(tuner, host):
    tuner.decide(host.sample)
    for _ in range(5):
        decision = scan(tuner, host, 1, 1000)
    assert decision.state == policy.SETTLED
    return decision


@pytest.mark.parametrize('change,reason', [
    ({'started': True}, 'guest started'),
    ({'guest_pages': 200000}, 'guest memory grew'),
    ({'tracked': 160000}, 'KSM tracked pages grew'),
])
def test_growth_boosts_again(change, reason):
    tuner = make()
    host = Host(guests=2, started=True, guest_pages=100000, tracked=100000)
    settle(tuner, host)
    sample = dataclasses.replace(host.next(), **change)
    decision = tuner.decide(sample)
    assert decision.state == policy.BOOST
    assert decision.reason.startswith(reason)


def test_memory_shrinking_then_growing_back_boosts():
    tuner = make()
    host = Host(guests=2, started=True, guest_pages=100000, tracked=100000)
    settle(tuner, host)
    assert tuner.decide(host.next(guest_pages=50000)).state == \
        policy.SETTLED
    decision = tuner.decide(host.next(guest_pages=100000))
    assert decision.state == policy.BOOST


def test_small_growth_keeps_settled():
    tuner = make()
    host = Host(guests=2, started=True, guest_pages=100000, tracked=100000)
    settle(tuner, host)
    decision = tuner.decide(host.next(guest_pages=103000, tracked=101000))
    assert decision.state == policy.SETTLED


def test_settled_rate_scales_with_memory_and_ignores_drift():
    tuner = make(maintenance_scan_seconds=100)
    host = Host(guests=2, started=True, tracked=10 ** 7)
    first = settle(tuner, host).pages_to_scan
    # 10M pages per 100 s at 200 ms sleeps.
    assert first == 20000
    assert tuner.decide(host.next(tracked=10 ** 7 + 10 ** 5)
                        ).pages_to_scan == first


def test_last_guest_gone_stops_ksmd():
    tuner = make()
    host = Host(guests=1, started=True)
    tuner.decide(host.sample)
    decision = tuner.decide(host.next(guests=0))
    assert (decision.state, decision.run) == (policy.IDLE, 0)


def test_calm_is_settled_knobs():
    tuner = make()
    tuner.decide(policy.Sample(time=0.0, guests=1, started=True,
                               tracked=600000))
    calm = tuner.calm('stopping')
    assert calm.run == 1 and calm.sleep_millisecs == 200
    assert calm.pages_to_scan == 400


@pytest.mark.parametrize('enabled,guests,run,state', [
    ('auto', 0, 0, policy.IDLE), ('auto', 2, 1, policy.STATIC),
    ('true', 0, 1, policy.STATIC), ('false', 2, 0, policy.DISABLED),
])
def test_fixed_policy_follows_enabled(enabled, guests, run, state):
    fixed = policy.FixedPolicy(ksm_settings.KsmSettings(enabled=enabled),
                               policy.STATIC)
    decision = fixed.decide(policy.Sample(time=0.0, guests=guests))
    assert (decision.run, decision.state) == (run, state)
