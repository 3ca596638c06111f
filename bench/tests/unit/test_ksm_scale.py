"""The scaling run's arithmetic: sizes, points, model, projection."""

import pytest

from bench import ksm_scale
from bench import ksm_scale_report
from nova_ksm_inject.ksm import settings as ksm_settings


def test_guests_are_at_most_2_gib_and_at_least_two():
    assert [(s.guests, s.guest_mib) for s in map(
        ksm_scale.scenario_for, (1, 2, 4, 16))] == [
        (2, 512), (2, 1024), (4, 1024), (8, 2048)]


def test_a_size_that_leaves_too_little_memory_is_refused():
    assert ksm_scale.fits(16, 22000) is None
    why = ksm_scale.fits(16, 20000)
    assert why.startswith('needs 21504 MiB available (16 GiB of guests, '
                          '5120 MiB left to the host), only 20000 MiB')


def test_point_from_samples():
    scenario = ksm_scale.scenario_for(1)
    expected = scenario.expected_saving(scenario.guests)
    times = [i * 0.5 for i in range(41)]
    samples = {'t': times,
               'saved': [0 if t < 6 else expected for t in times],
               'ksmd_cpu': [min(t, 8) * 0.6 + max(0, t - 8) * 0.005
                            for t in times]}
    point = ksm_scale.point(1, scenario, samples, filled=2.0, settled=8.0)
    assert point['t95'] == 4.0
    assert point['boost_cpu_seconds'] == pytest.approx(3.6)
    assert point['settled_cpu_percent'] == pytest.approx(0.5)
    never = ksm_scale.point(1, scenario, samples, 2.0, None)
    assert never['settled_cpu_percent'] is None


def points():
    return [{'gib': g, 'guests': 2, 'guest_mib': 512 * g,
             'fill_seconds': g, 't95': 2 + 1.5 * g,
             'boost_cpu_seconds': 0.5 * g, 'settled_cpu_percent': 0.8,
             'expected_pages': 1, 'peak_saved_pages': 1,
             'settled_seconds': 60} for g in (1, 2, 4, 8, 16)]


def test_model_is_linear_and_projects_big_hosts():
    model = ksm_scale.model(points())
    assert model['lines']['t95'] == pytest.approx((2.0, 1.5))
    assert model['projection'][1024]['t95'] == pytest.approx(1538.0)
    assert model['projection'][256]['boost_cpu_seconds'] == 128.0
    assert model['projection'][1024]['settled_cpu_percent'] == 0.8


def test_scale_target_and_report_label_the_projection():
    settings = ksm_settings.KsmSettings()
    result = ksm_scale.summary(points(), {32: 'too big'}, settings)
    [check] = result['targets']
    assert check['met'] and '32 GiB skipped' in check['measured']
    text = ksm_scale_report.format_text(result)
    assert '1 TiB    projection' in text.replace('  ', '  ')
    assert 'Skipped 32 GiB: too big' in text
    assert '[met] settled ksmd CPU <= 1% of a core' in text
    over = [dict(p, settled_cpu_percent=1.2) for p in points()]
    assert not ksm_scale.summary(over, {}, settings)['targets'][0]['met']


def test_scale_plot(tmp_path):
    pytest.importorskip('matplotlib')
    result = ksm_scale.summary(points(), {}, ksm_settings.KsmSettings())
    path = tmp_path / 'scale.png'
    assert ksm_scale_report.plot(result, str(path)) is None
    assert 0 < path.stat().st_size < 200 * 1024


def test_settled_cpu_counts_only_settled_time(tmp_path):
    from nova_ksm_inject.ksm import statedir as ksm_statedir
    statedir = ksm_statedir.KsmStateDir(str(tmp_path))
    now = [0.0]
    # Settled, then a boost (another process started) from 10 to 20 s
    # burning 60% of a core, then settled again at 0.5%.
    def state_at(t):
        return 'boost' if 10 <= t < 20 else 'settled'
    def cpu():
        t = now[0]
        return 0.005 * min(t, 10) + 0.6 * max(0, min(t, 20) - 10) + \
            0.005 * max(0, t - 20)
    def sleep(seconds):
        now[0] += seconds
        statedir.write_tuner({'state': state_at(now[0])})
    statedir.write_tuner({'state': 'settled'})
    found = ksm_scale.measure_settled(statedir, 30, clock=lambda: now[0],
                                      sleep=sleep, cpu=cpu)
    assert found['settled_seconds'] == pytest.approx(30, abs=1)
    assert found['settled_cpu_percent'] == pytest.approx(0.5, abs=0.05)
