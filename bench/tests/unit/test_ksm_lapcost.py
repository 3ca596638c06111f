"""The lap-cost experiment's arithmetic (the measurement itself needs
root and the real KSM: ``python -m bench.ksm_lapcost``)."""

from bench import ksm_lapcost


def rows(*points):
    return [{'t': t, 'cpu': cpu, 'laps': laps, 'saved': saved}
            for t, cpu, laps, saved in points]


def test_lap_costs_are_whole_laps_only():
    # The first lap began before the rows: not counted.
    polled = rows((0.0, 0.0, 5, 0), (0.1, 0.05, 6, 0), (0.2, 0.1, 6, 0),
                  (0.4, 0.3, 7, 0), (0.5, 0.35, 7, 0), (0.9, 0.7, 9, 0))
    assert ksm_lapcost.lap_costs(polled) == [0.25, 0.2]


def test_wave_t95_from_the_start_row():
    start = {'t': 10.0, 'cpu': 2.0}
    polled = rows((11.0, 2.5, 0, 100), (12.5, 3.4, 1, 950),
                  (13.0, 3.9, 2, 1000))
    assert ksm_lapcost.wave_t95(polled, start, 950) == (2.5, 1.4)
    assert ksm_lapcost.wave_t95(polled, start, 2000) == (None, None)


def test_workload_is_older_waves_and_one_more():
    args = ksm_lapcost.build_parser().parse_args(['--old-waves', '2'])
    scenario = ksm_lapcost.workload(args)
    assert (scenario.waves, scenario.guests, scenario.guest_mib) == (3, 2,
                                                                     688)


def test_age_windows_average_each_skip_cycle():
    costs = [3.0, 2.5, 2.5, 0.1, 2.7, 0.1, 0.1, 2.8]
    assert ksm_lapcost.age_windows(costs) == {
        'laps 1-3': 2.67, 'laps 4-5': 1.4, 'laps 6-8': 1.0}
