"""The KSM benchmark's table, JSON and plot, from a made-up run."""

import json
import sys

import pytest

from bench import ksm
from bench import ksm_report
from bench import ksm_scenario
from bench.tests.unit import test_ksm
from nova_ksm_inject.ksm import settings as ksm_settings

SCENARIO = ksm_scenario.Scenario(waves=1, guests=2, guest_mib=16,
                                 duration=20)


@pytest.fixture
def result():
    runs = {'static-max': test_ksm.fake_run(3000, 1.0, 0.9),
            'default': test_ksm.fake_run(0, 99.0, 0.01),
            'ksmtuned': test_ksm.fake_run(0, 99.0, 0.0),
            'adaptive': test_ksm.fake_run(3000, 1.5, 0.05)}
    runs['ksmtuned']['report'] = {
        'checks': [{'committed_kib': 70000, 'free_kib': 2000000,
                    'action': 'stop'}],
        'interval_seconds': 60, 'total_kib': 4000000, 'thres_kib': 800000}
    runs['adaptive']['report'] = {
        'hook_runs': 10, 'hook_seconds': 2.5, 'hook_cpu': 1.9,
        'controller_cpu': 0.3, 'cpu_budget_percent': 70,
        'poll_interval': 1.0, 'decisions': ['12:00:00.000 boost: guest '
                                            'started; run=1']}
    runs['default']['noise'] = [{'pid': 4242, 'name': 'appliance'}]
    return ksm.results(SCENARIO, runs, ksm_settings.KsmSettings())


def test_rst_table_aligns_columns():
    table = ksm_report.rst_table(('a', 'bb'), [('long cell', '1')])
    assert table.splitlines() == ['=========  ==', 'a          bb',
                                  '=========  ==', 'long cell  1',
                                  '=========  ==']


def test_text_report_has_table_targets_and_what_controllers_did(result):
    text = ksm_report.format_text(result)
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith('adaptive '))
    assert row.split()[:4] == ['adaptive', '1.5', '1.5', '1.0']
    never = next(line for line in lines if line.startswith('default '))
    assert never.split()[1:3] == ['never', '(>15)']
    assert '[met] adaptive t95 <= 2x static-max t95: 1.5x' in text
    assert '[met] adaptive ksmd CPU <= 10% of static-max: 5.6%' in text
    assert ('ksmtuned: 1 checks (every 60 s, shipped config); total '
            '4000000 KiB, threshold 800000 KiB; last check: QEMU RSS '
            '("committed") 70000 KiB') in text
    assert 'adaptive: 10 hook runs (2.5 s, 1.9 CPU s in all)' in text
    assert '  12:00:00.000 boost: guest started; run=1' in text
    assert 'noise during default: mergeable process appliance' in text
    assert 'Achievable saving after each wave (static-max): 0.01 GiB' in text


def test_real_guests_hook_runs_are_libvirt_s(result):
    # Real guests: libvirt ran the hook; the bench timed none of its runs.
    report = result['policies']['adaptive']['report']
    report.update(hook_runs=0, hook_seconds=0.0, hook_cpu=0.0)
    text = ksm_report.format_text(result)
    assert 'adaptive: hook run by libvirt, tuner CPU 0.3 s' in text
    assert 'hook CPU per run' not in text


def test_json_round_trips(result, tmp_path):
    path = tmp_path / 'r.json'
    ksm_report.write_json(result, str(path))
    loaded = json.loads(path.read_text())
    assert loaded['policies']['adaptive']['summary']['t95'] == 1.5
    assert loaded['targets'][0]['met'] is True


def test_plot_writes_a_small_png(result, tmp_path):
    pytest.importorskip('matplotlib')
    path = tmp_path / 'r.png'
    assert ksm_report.plot(result, str(path)) is None
    data = path.read_bytes()
    assert data.startswith(b'\x89PNG')
    assert len(data) < 200 * 1024


def test_plot_says_why_without_matplotlib(result, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    why = ksm_report.plot(result, str(tmp_path / 'r.png'))
    assert 'matplotlib is not installed' in why
    assert 'pip install matplotlib' in why
    assert not (tmp_path / 'r.png').exists()


def test_pressure_runs_report_memory_and_the_tuner_states():
    samples = {'t': [0.0, 0.5, 1.0, 1.5],
               'mem_available_percent': [30.0, 19.5, 18.0, None],
               'state': ['boost', 'boost', 'pressure', None]}
    assert ksm_report.memory_line(samples) == (
        'MemAvailable 18.0-30.0% of RAM, 1.0 s under 20%; tuner boost 1.0 s, '
        'pressure 0.5 s')


def test_real_guests_report_what_the_guests_occupy():
    summary = {'final_resident_gib': 2.9, 'final_saved_gib': 0.7,
               'final_footprint_gib': 2.2}
    assert ksm_report.footprint_line(summary) == (
        'at the end the guests held 2.900 GiB resident, 0.700 GiB of it '
        'merged: they occupy 2.200 GiB')
    summary.update(final_saved_gib=0.8, final_merged_gib=0.7)
    assert ksm_report.footprint_line(summary).endswith(
        '; 0.100 GiB more is on the zero page')
