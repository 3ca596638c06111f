"""static-max against reruns of itself (bench/ksm_grid_reruns.py)."""

from bench import ksm_grid_reruns as reruns


def run(seed, t95s, floor, allowed, tuner=None):
    return {'seed': seed, 'cases': [{'case': 1, 'numbers': {
        'waves': [{'static_t95': t, 'adaptive_t95': u}
                  for t, u in zip(t95s, tuner or t95s, strict=True)],
        'floor_cpu': floor, 'allowed_cpu': allowed,
        'adaptive_cpu': 2 * floor}}]}


def test_a_slow_rerun_misses_the_target_against_the_fast_one_only():
    fast, slow = run(3, [0.0, 1.0], 2.0, 3.0), run(3, [0.0, 2.1], 3.5, 5.0)
    rows, t95_misses, cpu_misses, pairs = reruns.case_rows([fast, slow])
    # 2.1 > 1.5 x 1.0 + 0.5; 1.0 <= 1.5 x 2.1 + 0.5. Floor 3.5 > 3.0.
    assert (t95_misses, cpu_misses, pairs) == (1, 1, 2)
    assert rows == [('3#1', '2', '1 of 2', '1 of 2', '2.0-3.5',
                     '0.0/1.0, 0.0/2.1')]


def test_the_resolution_is_the_margin():
    rows, t95_misses, _, _ = reruns.case_rows(
        [run(1, [1.0], 1.0, 2.0), run(1, [2.0], 1.0, 2.0)])
    assert t95_misses == 0  # 2.0 = 1.5 x 1.0 + 0.5


def test_a_case_run_once_or_of_another_seed_is_left_out():
    text = reruns.format_text([run(1, [1.0], 1.0, 2.0),
                               run(2, [9.0], 1.0, 2.0)])
    assert text.startswith('No case was run twice')


def test_the_tuner_against_its_reruns():
    first = run(1, [1.0, 1.0], 1.0, 2.0, tuner=[None, 1.0])
    again = run(1, [1.0, 1.0], 1.0, 2.0, tuner=[None, 2.5])
    again['cases'][0]['numbers']['adaptive_cpu'] = 2.5
    rows, t95_misses, cpu_misses, _ = reruns.case_rows(
        [first, again], reruns.KEYS['adaptive'])
    assert (t95_misses, cpu_misses) == (1, 1)  # CPU 2.5 > 2.0 allowed
    assert rows[0][-2:] == ('2.0-2.5', 'never/1.0, never/2.5')
    assert reruns.format_text([first, again], 'adaptive').startswith(
        'adaptive against reruns of itself')


def test_the_tuner_against_every_run_of_static_max():
    # static-max 1.0 s then 2.0 s; the tuner 2.0 s then 3.0 s.
    first = run(2, [1.0], 1.0, 2.0, tuner=[2.0])
    again = run(2, [2.0], 1.5, 3.0, tuner=[3.0])
    again['cases'][0]['numbers']['adaptive_cpu'] = 2.5
    rows, slow, costly, pairs, self_slow, self_costly, self_pairs = (
        reruns.cross_rows([first, again]))
    # Against 1.0 s (allowed 2.0 s): 3.0 misses; against 2.0 s (3.5 s)
    # both meet. CPU 2.0 and 2.5 against 2.0 allowed: 2.5 is over;
    # against 3.0 allowed, neither.
    assert (slow, costly, pairs) == (1, 1, 4)
    # static-max 2.0 against 1.0: met (2.0 = 1.5 x 1.0 + 0.5); floor 1.5
    # over the first run's 2.0 allowed: no.
    assert (self_slow, self_costly, self_pairs) == (0, 0, 2)
    assert rows == [('2#1', '2', '1 of 4', '1 of 4', '0 of 2', '0 of 2')]
    text = reruns.format_cross([first, again])
    assert 'missed the t95 target in 1 of 4 pairs' in text


def test_a_case_run_once_is_crossed_with_itself_only():
    rows = reruns.cross_rows([run(1, [1.0], 1.0, 2.0, tuner=[2.6])])[0]
    assert rows == [('1#1', '1', '1 of 1', '0 of 1', '-', '-')]
