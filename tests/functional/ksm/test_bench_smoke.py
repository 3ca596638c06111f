"""A tiny real run of the KSM benchmark: static-max and adaptive, one wave
of two small guests, on the real kernel.

The kernel's own counters are the verifier: ``pages_sharing`` and each
guest's /proc/<pid>/ksm_merging_pages (sampled by the benchmark), ksmd's
CPU time, and the KSM knobs read back with this package's test reader.
"""

import os

from nova_ksm_inject.bench import ksm
from nova_ksm_inject.bench import ksm_report
from nova_ksm_inject.bench import ksm_scenario
from nova_ksm_inject.ksm import settings as ksm_settings
from tests.functional.ksm import conftest

SCENARIO = ksm_scenario.Scenario(waves=1, guests=2, guest_mib=32,
                                 duration=20)


def bench_processes():
    """Guests and tuners a benchmark left behind."""
    found = []
    for name in os.listdir('/proc'):
        try:
            with open('/proc/%s/cmdline' % name, 'rb') as f:
                cmdline = f.read()
        except (OSError, ValueError):
            continue
        if b'ksm_guest.main()' in cmdline or (
                b'nova-ksm-tuner' in cmdline
                and b'nova-ksm-bench-' in cmdline):
            found.append((name, cmdline))
    return found


def test_static_max_and_adaptive_merge_and_ksm_is_restored(ksm_saved,
                                                           tmp_path):
    said = []
    # ksm_saved holds the KSM lock already: the benchmark must not wait.
    result = ksm.run(SCENARIO, ['static-max', 'adaptive'],
                     ksm_settings.KsmSettings(), lock_path=None,
                     progress=said.append)

    # The benchmark put every knob back by itself.
    assert conftest.read_knobs() == ksm_saved
    assert bench_processes() == []

    expected = SCENARIO.expected_saving(SCENARIO.guests)
    assert result['achievable']['source'] == 'static-max'
    assert result['achievable']['pages'][0] >= 0.9 * expected
    static = result['policies']['static-max']
    adaptive = result['policies']['adaptive']
    for policy in (static, adaptive):
        samples = policy['samples']
        assert max(samples['saved']) >= 0.9 * expected
        # Every guest's identical pages merged, as the kernel counts them.
        assert max(samples['guest_merging']) >= (
            0.9 * SCENARIO.guests * SCENARIO.identical_pages)
        assert policy['summary']['t95'] is not None
        assert policy['summary']['t95'] < 15
        # Guests gone after the last event: nothing saved at the end.
        assert samples['saved'][-1] == 0
    assert (adaptive['summary']['ksmd_cpu_seconds']
            < static['summary']['ksmd_cpu_seconds'])

    report = adaptive['report']
    # prepare/start/started begin and stopped/release end per guest.
    assert report['hook_runs'] == 5 * SCENARIO.guests
    assert any(' boost: guest started' in d for d in report['decisions'])
    assert said[0].startswith('[1/2] static-max')

    text = ksm_report.format_text(result)
    assert 'adaptive t95 <= 2x static-max t95' in text
    path = tmp_path / 'plot.png'
    why_not = ksm_report.plot(result, str(path))
    assert why_not is None and path.stat().st_size < 200 * 1024
