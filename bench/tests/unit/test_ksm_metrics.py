"""The KSM benchmark's numbers, from hand-made samples."""

import pytest

from bench import ksm_metrics

PAGE = 4096
GIB_PAGES = 1024 ** 3 // PAGE


def test_time_to_first_sample_at_or_over_the_threshold_in_the_window():
    times = [0, 1, 2, 3, 4, 5]
    values = [0, 10, 60, 40, 90, 100]
    assert ksm_metrics.time_to(times, values, 50, 0, 5) == 2
    # Counted from the window's start; earlier samples do not count.
    assert ksm_metrics.time_to(times, values, 50, 3, 5) == 1
    assert ksm_metrics.time_to(times, values, 95, 0, 4) is None


def test_integral_is_trapezoidal():
    assert ksm_metrics.integral([0, 1, 3], [0, 2, 2]) == pytest.approx(5.0)
    assert ksm_metrics.integral([0], [7]) == 0.0


def test_phases_from_the_event_log_end_at_the_next_event():
    log = [{'time': 0.0, 'kind': 'arrive', 'wave': 1},
           {'time': 45.2, 'kind': 'arrive', 'wave': 2},
           {'time': 135.0, 'kind': 'leave', 'wave': 1},
           {'time': 150.0, 'kind': 'leave', 'wave': 2}]
    assert ksm_metrics.phases_from_log(log, 180) == [
        (1, 0.0, 45.2), (2, 45.2, 135.0)]
    # Interrupted before anyone left: the last phase ends with the run.
    assert ksm_metrics.phases_from_log(log[:2], 180)[-1] == (2, 45.2, 180)


def test_achievable_is_the_most_saved_within_each_phase():
    phases = [(1, 0, 10), (2, 10, 20)]
    times = [0, 5, 10, 15, 20, 25]
    saved = [0, 300, 290, 700, 650, 0]
    assert ksm_metrics.achievable_levels(phases, times, saved) == [300, 700]


def test_wave_times_count_what_each_wave_adds():
    phases = [(1, 0, 10), (2, 10, 20)]
    levels = [300, 700]
    times = [0, 2, 4, 10, 12, 14, 16]
    saved = [0, 160, 290, 300, 450, 520, 690]
    waves = ksm_metrics.wave_times(phases, levels, times, saved)
    # Wave 1: 50% of 300 = 150 at t=2; 95% = 285 at t=4.
    assert (waves[0]['t50'], waves[0]['t95']) == (2, 4)
    # Wave 2: 300 + 50% of 400 = 500 at t=14 (4 s in); 95% = 680 at 16.
    assert (waves[1]['t50'], waves[1]['t95']) == (4, 6)
    assert waves[1]['achievable_pages'] == 700
    assert waves[1]['phase_seconds'] == 10


def test_a_policy_behind_on_earlier_waves_must_catch_up_first():
    phases = [(1, 0, 10), (2, 10, 20)]
    # It merged nothing of wave 1: 400 pages are only 40% of wave 2's
    # threshold base (300) plus half of 400.
    times = [0, 10, 15, 20]
    saved = [0, 0, 400, 400]
    waves = ksm_metrics.wave_times(phases, [300, 700], times, saved)
    assert waves[0]['t50'] is None
    assert waves[1]['t50'] is None


def test_worst_wave_or_none_when_a_wave_never_got_there():
    assert ksm_metrics.worst([{'t95': 3}, {'t95': 5}], 't95') == 5
    assert ksm_metrics.worst([{'t95': 3}, {'t95': None}], 't95') is None
    assert ksm_metrics.worst([], 't95') is None


def test_value_at_takes_the_last_sample_not_after():
    assert ksm_metrics.value_at([0, 1, 2], [5, 6, 7], 1.5) == 6
    assert ksm_metrics.value_at([0, 1, 2], [5, 6, 7], 9) == 7


def samples(times, saved, cpu):
    return {'t': times, 'saved': saved, 'ksmd_cpu': cpu}


def test_summary_cpu_saving_and_efficiency():
    # One GiB saved for two minutes, 30 CPU seconds; CPU after the run's
    # end (the unmerge) does not count.
    s = samples([0, 60, 120, 130], [GIB_PAGES] * 3 + [0],
                [0.0, 10.0, 30.0, 99.0])
    summary = ksm_metrics.summarize(s, [(1, 0, 120)], [GIB_PAGES], 120,
                                    PAGE)
    assert summary['ksmd_cpu_seconds'] == 30.0
    assert summary['saved_gib_min'] == pytest.approx(2.0 + 1 / 12, 1e-3)
    assert summary['efficiency'] == pytest.approx(
        summary['saved_gib_min'] / 30.0, 1e-3)
    assert summary['peak_saved_gib'] == 1.0
    assert (summary['t50'], summary['t95']) == (0, 0)
    assert summary['shortest_phase'] == 120


def test_summary_says_what_the_guests_occupy_at_the_end():
    # 3 GiB resident, 1 GiB of it saved: the guests occupy 2 GiB.
    s = samples([0, 60, 120], [GIB_PAGES] * 3, [0.0, 1.0, 2.0])
    s['guest_rss_pages'] = [3 * GIB_PAGES] * 3
    summary = ksm_metrics.summarize(s, [(1, 0, 120)], [GIB_PAGES], 120,
                                    PAGE)
    assert (summary['final_resident_gib'], summary['final_saved_gib'],
            summary['final_footprint_gib']) == (3.0, 1.0, 2.0)


def test_summary_without_cpu_has_no_efficiency():
    s = samples([0, 1], [0, 0], [0.0, 0.0])
    summary = ksm_metrics.summarize(s, [(1, 0, 1)], [100], 1, PAGE)
    assert summary['efficiency'] is None
    assert summary['t95'] is None


def test_cpu_percent_over_a_sliding_window():
    times = [0, 1, 2, 3, 4]
    cpu = [0.0, 0.5, 1.0, 1.0, 1.0]
    assert ksm_metrics.cpu_percent(times, cpu, window=2.0) == [
        0.0, 50.0, 50.0, 25.0, 0.0]


def summary(t95, cpu, phase=45.0):
    return {'t95': t95, 'ksmd_cpu_seconds': cpu, 'shortest_phase': phase}


def by_target(checks):
    return {c['target']: c for c in checks}


def test_targets_met():
    checks = by_target(ksm_metrics.check_targets({
        'static-max': summary(3.0, 150.0), 'adaptive': summary(5.0, 12.0),
        'default': summary(None, 1.0), 'advisor': summary(30.0, 5.0),
        'ksmtuned': summary(None, 0.0)}))
    time_check = checks['adaptive t95 <= 2x static-max t95']
    assert time_check['met'] and time_check['measured'].startswith('1.7x')
    cpu_check = checks['adaptive ksmd CPU <= 10% of static-max']
    assert cpu_check['met'] and cpu_check['measured'].startswith('8.0%')
    assert checks['adaptive t95 5x sooner than advisor']['met']
    never = checks['adaptive t95 5x sooner than default']
    # Never reaching 95% counts as the phase length, a lower bound.
    assert never['met'] and never['measured'].startswith('>= 9.0x')
    assert 'had not reached 95% after 45 s' in never['measured']


def test_never_within_the_phase_is_bounded_by_the_rest_of_the_run():
    phases = [(1, 0.0, 45.0), (2, 45.0, 90.0)]
    times = [i * 5.0 for i in range(37)]  # 0 .. 180 s
    # Reaches wave 1's level at 100 s (after its phase), never wave 2's.
    saved = [100 if t >= 100 else 0 for t in times]
    waves = ksm_metrics.wave_times(phases, [100, 200], times, saved)
    assert [(w['t95'], w['t95_at_least']) for w in waves] == [
        (None, 100.0), (None, 135.0)]
    slow = {'t95': None, 'waves': waves, 'shortest_phase': 45.0}
    assert ksm_metrics._t95_bound(slow) == (135.0, True)


def test_targets_missed_with_the_numbers():
    checks = by_target(ksm_metrics.check_targets({
        'static-max': summary(2.0, 100.0), 'adaptive': summary(5.0, 20.0),
        'advisor': summary(20.0, 5.0)}))
    assert checks['adaptive t95 <= 2x static-max t95']['met'] is False
    assert checks['adaptive ksmd CPU <= 10% of static-max']['met'] is False
    assert checks['adaptive t95 5x sooner than advisor']['met'] is False
    assert checks['adaptive t95 5x sooner than advisor'][
        'measured'].startswith('4.0x')


def test_adaptive_never_reaching_95_misses_every_time_target():
    checks = ksm_metrics.check_targets({
        'static-max': summary(2.0, 100.0), 'adaptive': summary(None, 1.0),
        'default': summary(None, 1.0)})
    assert [c['met'] for c in checks if 't95' in c['target']] == [
        False, False]


def test_targets_need_the_policies_they_compare():
    assert ksm_metrics.check_targets({'adaptive': summary(5.0, 1.0)}) == []
    checks = ksm_metrics.check_targets({
        'static-max': summary(None, 100.0), 'adaptive': summary(5.0, 1.0)})
    assert checks[0]['met'] is None
