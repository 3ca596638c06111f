"""The grid's results as a table (every case, worst first) and a plot of
t95 ratio against CPU ratio per case (``python -m bench.ksm_grid_report
--plot FILE RESULT.json...`` draws one plot from several seeds)."""

import argparse
import json
import sys

from bench import ksm_grid
from bench import ksm_grid_targets as targets
from bench import ksm_report
from bench import ksm_scenario
from nova_ksm_inject.ksm import settings as ksm_settings

COLUMNS = ('case', 'workload', 'static t95 (s)', 't95 ratio',
           'floor (s)', 'CPU (s)', 'x floor', 'allowed (s)',
           'bound (s)', 'vs static', '5 min', 'settled (s/min)', 'met')


def _ratio(value, digits=2):
    return 'never' if value is None else '%.*fx' % (digits, value)


_percent = targets.percent


def _label(case, seed):
    """The case's number, or SEED#CASE in a table of several seeds."""
    return str(case['case']) if seed is None else '%s#%d' % (seed,
                                                             case['case'])


def case_row(case, seed=None):
    n = case['numbers']
    static = '/'.join('-' if w['static_t95'] is None
                      else '%.1f' % w['static_t95'] for w in n['waves'])
    met = all(c['met'] for c in case['checks'])
    label = _label(case, seed)
    return (label, case['describe'], static, _ratio(n['t95_ratio']),
            '%.1f' % n['floor_cpu'], '%.1f' % n['adaptive_cpu'],
            _ratio(n['cpu_vs_floor'], 1), '%.1f' % n['allowed_cpu'],
            _bound(n), _percent(n['static_share']),
            _percent(n['projected_share']),
            'n/a' if n['settled_cpu_per_min'] is None
            else '%.2f' % n['settled_cpu_per_min'],
            'met' if met else 'MISSED')


def _bound(numbers):
    """The kernel's bound (ksm_grid_targets), starred when over the
    allowed CPU: the CPU target cannot be met there."""
    bound = numbers.get('bound_cpu')
    if bound is None:
        return 'n/a'
    return '%.1f%s' % (bound, '*' if numbers['bound_over_allowed'] else '')


def worst_first(cases):
    return sorted(cases, key=lambda c: -c['numbers']['badness'])


def table(result):
    return ksm_report.rst_table(
        COLUMNS, [case_row(c) for c in worst_first(result['cases'])])


def combined_table(results):
    """Every case of several seeds in one table, worst first, each
    named SEED#CASE."""
    cases = [(result['seed'], case) for result in results
             for case in result['cases']]
    cases.sort(key=lambda sc: -sc[1]['numbers']['badness'])
    header = ('seed#case',) + COLUMNS[1:]
    return ksm_report.rst_table(header, [case_row(c, seed)
                                         for seed, c in cases])


def format_text(result):
    missed = [c for c in result['targets'] if c['met'] is not True]
    lines = [
        'Grid, seed %d: %d waves workloads, static-max and the tuner on '
        'each; every case, worst first. t95 ratio: the worst wave\'s t95 '
        'over static-max\'s (target <= %gx); floor: static-max\'s ksmd CPU '
        'until each wave\'s t95; allowed: %gx the floor + the settled '
        'ceiling x time; bound: the kernel\'s, the floor + static-max\'s '
        'next full scan after each t95 (* over the allowed CPU: the CPU '
        'target cannot be met); 5 min: ksmd CPU vs static-max\'s '
        'projected to '
        '%.0f s (target <= %d%%).' % (
            result['seed'], len(result['cases']), targets.MAX_T95_RATIO,
            targets.MAX_FLOOR_MULTIPLE, targets.LONG_RUN_SECONDS,
            round(100 * targets.MAX_STATIC_SHARE)),
        '', table(result), '']
    for case in worst_first(result['cases']):
        for entry in case['checks']:
            lines.append('[%s] #%d %s: %s' % (
                'met' if entry['met'] else 'MISSED', case['case'],
                entry['target'], entry['measured']))
        for why in case.get('disturbed', []):
            lines.append('[disturbed] #%d %s' % (case['case'], why))
        for note in targets.short_waves(case['numbers']):
            lines.append('[note] #%d %s' % (case['case'], note))
        for entry in targets.oracle_verdicts(case['numbers']):
            lines.append('[oracle] #%d %s missed: %s (%s)' % (
                case['case'], entry['target'], VERDICTS[entry['verdict']],
                entry['measured']))
    lines.append('')
    if any('oracle' in c['numbers'] for c in result['cases']):
        lines += [ORACLE_INTRO, '', oracle_table([(None, c) for c in
                                                  result['cases']]), '']
    lines.append('%d of %d checks met%s' % (
        len(result['targets']) - len(missed), len(result['targets']),
        '' if not missed else '; MISSED: ' + ', '.join(
            '%s %s' % (c['scenario'], c['target'].split(' <=')[0])
            for c in missed)))
    return '\n'.join(lines)


VERDICTS = {'kernel': 'the oracle missed it too (no policy that stops '
                     'scanning between waves meets it)',
            'bound': 'the oracle met it only by knowing the mark (the '
                     'kernel\'s bound is over the allowed CPU)',
            'budget': 'the oracle met it only over the tuner\'s budget '
                      '(the least CPU either spent, at the budget, takes '
                      'longer than allowed)',
            'tuner': 'the oracle met it (the tuner\'s own)'}
ORACLE_INTRO = (
    'The oracle (ksm_oracle): ksmd flat out from each wave\'s first guest '
    'until the saving reaches the wave\'s t95 mark from static-max\'s run '
    'and the full scan then in progress ends (every new page visited '
    'twice), stopped in between; held to the same targets:')
ORACLE_COLUMNS = ('case', 'oracle t95 per wave (s)', 't95 ratio', 'CPU (s)',
                  'allowed (s)', '5 min', 'time', 'CPU', 'tuner missed',
                  'not the tuner\'s')


def oracle_row(case, seed=None):
    n = case['numbers']
    o = n['oracle']
    label = _label(case, seed)
    verdicts = targets.oracle_verdicts(n)

    def named(entry):
        return entry['target'] if entry['wave'] is None else (
            'wave %d' % entry['wave'])
    return (label, '/'.join('-' if w['oracle_t95'] is None
                            else '%.1f' % w['oracle_t95'] for w in o['waves']),
            _ratio(o['t95_ratio']), '%.1f' % o['cpu'],
            '%.1f' % n['allowed_cpu'], _percent(o['projected_share']),
            'met' if o['t95_met'] else 'MISSED',
            'met' if o['cpu_met'] else 'MISSED',
            ', '.join(named(v) for v in verdicts) or '-',
            ', '.join(named(v) + ('' if v['verdict'] == 'kernel'
                                  else ' (%s)' % v['verdict'])
                      for v in verdicts if v['verdict'] != 'tuner') or '-')


def oracle_table(seeded_cases):
    """The oracle's row of every case that ran it, worst first."""
    rows = sorted((sc for sc in seeded_cases if 'oracle' in sc[1]['numbers']),
                  key=lambda sc: -sc[1]['numbers']['badness'])
    header = ORACLE_COLUMNS if all(s is None for s, _ in rows) else (
        ('seed#case',) + ORACLE_COLUMNS[1:])
    return ksm_report.rst_table(header, [oracle_row(c, s) for s, c in rows])


def points(results):
    """[(seed, case, t95 ratio, CPU / allowed)] of every case."""
    found = []
    for result in results:
        for case in result['cases']:
            n = case['numbers']
            found.append((result['seed'], case['case'], n['t95_ratio'],
                          n['adaptive_cpu'] / n['allowed_cpu']
                          if n['allowed_cpu'] else None))
    return found


def plot(results, path):
    """t95 ratio against CPU ratio (of the allowed CPU), one point per
    case, one colour per seed. None, or why no plot was written."""
    pyplot = ksm_report.load_pyplot()
    if isinstance(pyplot, str):
        return pyplot
    figure, axes = pyplot.subplots(figsize=(7, 5))
    seeds = sorted({p[0] for p in points(results)})
    for seed, marker in zip(seeds, 'osD^v<>p*h' * 10, strict=False):
        mine = [p for p in points(results) if p[0] == seed
                and None not in p]
        axes.scatter([p[2] for p in mine], [p[3] for p in mine],
                     label='seed %d' % seed, s=30, marker=marker)
        for p in mine:
            axes.annotate(str(p[1]), (p[2], p[3]), fontsize=7,
                          xytext=(3, 3), textcoords='offset points')
    axes.axvline(targets.MAX_T95_RATIO, color='grey', linestyle='--',
                 linewidth=0.8)
    axes.axhline(1.0, color='grey', linestyle='--', linewidth=0.8)
    axes.set_xlabel('t95 ratio: worst wave, tuner / static-max (target '
                    '<= %g, + %g s)' % (targets.MAX_T95_RATIO,
                                        targets.RESOLUTION))
    axes.set_ylabel('ksmd CPU / allowed (%gx floor + settled x time; '
                    'target <= 1)' % targets.MAX_FLOOR_MULTIPLE,
                    fontsize=8)
    found = [p for p in points(results) if None not in p]
    axes.set_xlim(0, max([2.0] + [p[2] + 0.1 for p in found]))
    axes.set_ylim(0, max([1.2] + [p[3] + 0.1 for p in found]))
    axes.legend(fontsize=8)
    axes.grid(True, linewidth=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return None


def merge(results, result):
    """``results`` with ``result`` added; the cases of a seed already
    there are replaced by those run again (``--grid-only``)."""
    for earlier in results:
        if earlier['seed'] == result['seed']:
            again = {c['case']: c for c in result['cases']}
            earlier['cases'] = [again.pop(c['case'], c)
                                for c in earlier['cases']]
            earlier['cases'] += list(again.values())
            earlier['targets'] = [check for c in earlier['cases']
                                  for check in c['checks']]
            earlier['rerun'] = sorted(set(earlier.get('rerun', []))
                                      | {c['case'] for c in result['cases']})
            return results
    return results + [result]


def refresh(result, settings=None):
    """Every case's numbers and checks computed again from its kept
    samples, with the targets' arithmetic of this tree (a run's JSON
    keeps what it measured; what is made of it may improve)."""
    settings = settings or ksm_settings.KsmSettings()
    for case in result['cases']:
        policies = case['policies']
        if not all('samples' in p for p in policies.values()):
            continue
        scenario = ksm_scenario.Scenario(**case['scenario'])
        case['numbers'] = targets.case_numbers(scenario, policies, settings)
        case['checks'] = targets.case_checks(case['case'], case['numbers'])
    return ksm_grid.finish(result)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ksm_grid_report', description='One plot (and the tables) '
        'from the JSON of grid runs (bench-ksm --scenario grid --json).')
    parser.add_argument('results', nargs='+', metavar='RESULT.json')
    parser.add_argument('--plot', metavar='FILE')
    args = parser.parse_args(argv)
    results = []
    for name in args.results:
        with open(name) as f:
            data = json.load(f)
        results = merge(results, refresh(data.get('grid', data)))
    for result in results:
        print(format_text(result) + '\n')
    if len(results) > 1:
        print('Every case of seeds %s, worst first:\n' % ', '.join(
            str(r['seed']) for r in results))
        print(combined_table(results) + '\n')
        seeded = [(r['seed'], c) for r in results for c in r['cases']]
        if any('oracle' in c['numbers'] for _, c in seeded):
            print(ORACLE_INTRO + '\n')
            print(oracle_table(seeded) + '\n')
    if args.plot:
        why_not = plot(results, args.plot)
        print(why_not or 'Wrote %s' % args.plot, file=sys.stderr)
        return 1 if why_not else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
