"""static-max against reruns of itself: how far the grid's targets are
the kernel's noise (``python -m bench.ksm_grid_reruns RESULT.json...``).

The grid compares the tuner with one run of static-max. The same
workload on the same kernel does not merge in the same time twice: a
later wave lands wherever ``smart_scan``'s skip cycle of the older
guests' pages is, and a full scan that visits them costs ten to twenty
times one that skips them. So, for every case run more than once (the
same seed and case in several JSON files), each run of static-max is put
against each other one with the grid's own time target (every wave's t95
within 1.5x the other run's, plus the resolution) and the CPU one (its
merge-work floor within the other run's allowed CPU). A case where
static-max misses a target against itself is one where no policy can be
sure to meet it in a single run.

``--policy adaptive`` does the same with the tuner's t95 (runs of the
same tuner only: its JSON does not say which commit ran). ``--cross``
puts each run of the tuner against each run of static-max, its own
round's and the others', next to static-max against itself: how often
the tuner meets the targets against a run of static-max drawn at
random, and how often static-max itself does.
"""

import argparse
import itertools
import json
import sys

from bench import ksm_grid_report
from bench import ksm_grid_targets as targets
from bench import ksm_report

KEYS = {'static-max': 'static_t95', 'adaptive': 'adaptive_t95'}


def t95_met(candidate, reference, key='static_t95', reference_key=None):
    """Whether ``candidate``'s waves meet the time target against
    ``reference``'s (case numbers; ``key``: whose t95, in the reference
    ``reference_key``'s, by default the same)."""
    reference_key = reference_key or key
    for theirs, ours in zip(reference['waves'], candidate['waves'],
                            strict=False):
        if theirs[reference_key] is None or ours[key] is None:
            continue
        if ours[key] > (targets.MAX_T95_RATIO * theirs[reference_key]
                        + targets.RESOLUTION + 1e-9):
            return False
    return True


def by_case(results):
    """{(seed, case): [case numbers of every run]}."""
    runs = {}
    for result in results:
        for case in result['cases']:
            runs.setdefault((result['seed'], case['case']), []).append(
                case['numbers'])
    return runs


def misses(pairs, key, reference_key, cpu):
    """(t95 misses, CPU misses) over ``pairs`` of (reference, candidate)
    case numbers: the candidate's ``key`` t95 against the reference's
    ``reference_key`` one, and its ``cpu`` against the reference's
    allowed CPU."""
    return (sum(not t95_met(b, a, key, reference_key) for a, b in pairs),
            sum(b[cpu] > a['allowed_cpu'] for a, b in pairs))


def case_rows(results, key='static_t95'):
    """One row per case run at least twice, and the totals:
    (rows, t95 misses, CPU misses, ordered pairs). The CPU check is
    static-max's merge-work floor against the other run's allowed CPU,
    or the tuner's CPU against it (``key`` the tuner's t95)."""
    cpu = 'floor_cpu' if key == KEYS['static-max'] else 'adaptive_cpu'
    rows, t95_misses, cpu_misses, pairs = [], 0, 0, 0
    for (seed, case), runs in sorted(by_case(results).items()):
        if len(runs) < 2:
            continue
        ordered = list(itertools.permutations(runs, 2))
        slow, costly = misses(ordered, key, key, cpu)
        t95s = ['/'.join(targets._seconds(w[key])
                         for w in run['waves']) for run in runs]
        floors = [run[cpu] for run in runs]
        rows.append(('%s#%s' % (seed, case), str(len(runs)),
                     '%d of %d' % (slow, len(ordered)),
                     '%d of %d' % (costly, len(ordered)),
                     '%.1f-%.1f' % (min(floors), max(floors)),
                     ', '.join(t95s)))
        t95_misses += slow
        cpu_misses += costly
        pairs += len(ordered)
    return rows, t95_misses, cpu_misses, pairs


def cross_rows(results):
    """One row per case: each run of the tuner against each run of
    static-max (its own round's and the others'), then static-max against
    its reruns; and the totals (rows, tuner t95 misses, tuner CPU misses,
    pairs, static-max t95 misses, floor misses, static-max pairs)."""
    rows, totals = [], [0] * 6
    for (seed, case), runs in sorted(by_case(results).items()):
        crossed = list(itertools.product(runs, runs))
        itself = list(itertools.permutations(runs, 2))
        counts = (
            misses(crossed, KEYS['adaptive'], KEYS['static-max'],
                   'adaptive_cpu') + (len(crossed),)
            + misses(itself, KEYS['static-max'], KEYS['static-max'],
                     'floor_cpu') + (len(itself),))
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
        rows.append(('%s#%s' % (seed, case), str(len(runs)))
                    + tuple('%d of %d' % (n, counts[2]) for n in counts[:2])
                    + tuple('%d of %d' % (n, counts[5]) if counts[5]
                            else '-' for n in counts[3:5]))
    return (rows,) + tuple(totals)


def format_cross(results):
    rows, slow, costly, pairs, self_slow, self_costly, self_pairs = (
        cross_rows(results))
    return '\n'.join([
        'The tuner against every run of static-max, and static-max '
        'against its reruns (pairs of runs of the same case; the '
        'grid\'s targets, static-max\'s run as the reference):', '',
        ksm_report.rst_table(
            ('case', 'runs', 'tuner: t95 missed', 'tuner: CPU over',
             'static-max: t95 missed', 'static-max: floor over'), rows),
        '',
        'In all: the tuner missed the t95 target in %d of %d pairs and '
        'the CPU target in %d; static-max against itself %d and %d of '
        '%d.' % (slow, pairs, costly, self_slow, self_costly,
                 self_pairs)])


def format_text(results, policy='static-max'):
    rows, slow, costly, pairs = case_rows(results, KEYS[policy])
    if not rows:
        return 'No case was run twice: give the JSON of several runs.'
    return '\n'.join([
        '%s against reruns of itself (ordered pairs of runs of the same '
        'case; the grid\'s targets, the first run as the reference):'
        % policy, '',
        ksm_report.rst_table(
            ('case', 'runs', 't95 target missed',
             '%s over allowed' % ('floor' if policy == 'static-max'
                                  else 'CPU'),
             '%s (s)' % ('floor' if policy == 'static-max' else 'CPU'),
             '%s t95 per run (s)' % policy), rows), '',
        'In all: the t95 target missed in %d of %d pairs, the %s over '
        'the allowed CPU in %d.' % (slow, pairs, 'floor' if policy ==
                                    'static-max' else 'CPU', costly)])


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ksm_grid_reruns', description=__doc__.split('\n')[0])
    parser.add_argument('results', nargs='+', metavar='RESULT.json')
    parser.add_argument('--policy', choices=sorted(KEYS),
                        default='static-max', help="whose t95 is put "
                        "against its reruns (default: %(default)s)")
    parser.add_argument('--cross', action='store_true',
                        help='each run of the tuner against each run of '
                             'static-max, next to static-max against '
                             'itself')
    args = parser.parse_args(argv)
    results = []
    for name in args.results:
        with open(name) as f:
            data = json.load(f)
        results.append(ksm_grid_report.refresh(data.get('grid', data)))
    print(format_cross(results) if args.cross
          else format_text(results, args.policy))
    return 0


if __name__ == '__main__':
    sys.exit(main())
