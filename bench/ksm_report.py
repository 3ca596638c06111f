"""The KSM benchmark's results as a table, JSON and a PNG plot.

The table is a reStructuredText simple table, readable in a terminal and
pasted as is into the README.
"""

import json
import logging
import mmap

from bench import ksm_metrics
from bench import ksm_scenario
from bench import ksm_targets

GIB = 1024 ** 3
# Lines that often overlap (nothing merged) stay apart by style.
STYLES = {
    'default': {'color': 'tab:blue', 'linewidth': 1.2},
    'static-max': {'color': 'tab:orange', 'linewidth': 1.2},
    'ksmtuned': {'color': 'tab:green', 'linewidth': 1.6,
                 'linestyle': '--'},
    'advisor': {'color': 'tab:red', 'linewidth': 1.2, 'linestyle': ':'},
    'adaptive': {'color': 'tab:purple', 'linewidth': 1.6},
}
COLUMNS = ('policy', 't50 (s)', 't95 (s)', 'ksmd CPU (s)',
           'saved (GiB x min)', 'GiB x min per CPU s', 'peak saved (GiB)')


def _seconds(value, bound):
    return 'never (>%.0f)' % bound if value is None else '%.1f' % value


def _number(value, digits=2):
    return 'n/a' if value is None else '%.*f' % (digits, value)


def table_rows(result):
    rows = []
    for name, policy in result['policies'].items():
        s = policy['summary']
        rows.append((name, _seconds(s['t50'], s['shortest_phase']),
                     _seconds(s['t95'], s['shortest_phase']),
                     _number(s['ksmd_cpu_seconds'], 1),
                     _number(s['saved_gib_min']), _number(s['efficiency']),
                     _number(s['peak_saved_gib'])))
    return rows


def rst_table(header, rows):
    """A reStructuredText simple table."""
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    rule = '  '.join('=' * w for w in widths)
    lines = [rule, '  '.join(h.ljust(w) for h, w in zip(header, widths,
                                                          strict=True)),
             rule]
    lines += ['  '.join(str(c).ljust(w) for c, w in zip(row, widths,
                                                         strict=True))
              for row in rows]
    lines.append(rule)
    return '\n'.join(line.rstrip() for line in lines)


def wave_rows(result):
    """Per policy, each wave's t50/t95."""
    rows = []
    for name, policy in result['policies'].items():
        cells = ['%s / %s' % (_seconds(w['t50'], w['phase_seconds']),
                              _seconds(w['t95'], w['phase_seconds']))
                 for w in policy['summary']['waves']]
        rows.append(tuple([name] + cells))
    return rows


def describe(result):
    s = result['scenario']
    if s.get('kind') == ksm_scenario.CHURN:
        return ('a guest of %d MiB (%d%% identical) arrives every %g s and '
                'leaves %g s later, for %.0f s per policy; kernel %s, %d '
                'CPUs, %d MiB.' % (
                    s['guest_mib'], round(s['identical'] * 100),
                    s['arrive_every'], s['lifetime'], s['duration'],
                    result['host']['kernel'], result['host']['cpus'],
                    result['host']['mem_total_mib']))
    gib = ['%.2f' % (p * result['host']['page_size'] / GIB)
           for p in result['achievable']['pages']]
    return ('%d waves of %d guests x %d MiB (%d%% identical, %g%% '
            'volatile), %.0f s per policy%s; kernel %s, %d CPUs, %d MiB. '
            'Achievable saving after each wave (%s): %s GiB.'
            % (s['waves'], s['guests'], s['guest_mib'],
               round(s['identical'] * 100), s['volatile'] * 100,
               s['duration'], ', memory pressure' if s['pressure'] else '',
               result['host']['kernel'], result['host']['cpus'],
               result['host']['mem_total_mib'], result['achievable']['source'],
               ' / '.join(gib)))


MARKS = {True: 'met', False: 'MISSED', None: 'n/a'}


def format_text(result):
    """Everything a person reads after a run."""
    kind = result['scenario'].get('kind', 'waves')
    lines = ['Scenario %s: %s' % (kind, describe(result)), '',
             rst_table(COLUMNS, table_rows(result)), '']
    waves = len(result['achievable']['pages'])
    if kind in ('waves', 'pressure'):
        lines += ['Per wave, t50 / t95 (s):', '', rst_table(
            tuple(['policy'] + ['wave %d' % (i + 1) for i in range(waves)]),
            wave_rows(result)), '']
    if result.get('saving') == ksm_metrics.FREED:
        lines += ['Saved: merged pages plus the guests\' pages a huge page '
                  'split put on the shared zero page.', '']
    lines += scenario_lines(result) + ['Targets:']
    lines += target_lines(result['targets'])
    lines += [''] + controllers(result)
    return '\n'.join(lines)


def target_lines(checks):
    """One ``[met]`` or ``[MISSED]`` line per target."""
    return ['  [%s] %s: %s' % (MARKS[c['met']], c['target'], c['measured'])
            for c in checks]


def scenario_lines(result):
    """What only this kind of scenario measures."""
    kind = result['scenario'].get('kind', 'waves')
    scenario = ksm_scenario.Scenario(**{
        k: v for k, v in result['scenario'].items()
        if k != 'expected_pages'})
    lines = []
    for name, policy in result['policies'].items():
        if kind == ksm_scenario.CHURN:
            times = ksm_targets.guest_t95(scenario, policy)
            known = sorted(t for t in times.values() if t is not None)
            lines.append('%s: guests 95%% merged after a median %s s '
                         '(worst %s s, %d never), worst 2 s ksmd CPU %.1f%%'
                         % (name, _number(ksm_metrics.median(known), 1),
                            _number(max(known, default=None), 1),
                            list(times.values()).count(None),
                            ksm_targets.worst_window(policy['samples'])))
        elif kind == ksm_scenario.SHARE_NOTHING:
            found = ksm_targets.loss_detection(policy)
            lines.append('%s: %s' % (name, 'ksmd never stopped'
                                     if found is None else
                                     'ksmd stopped at %.1f s, %.2f CPU s '
                                     'after' % found))
        elif scenario.pressure and policy['samples'].get(
                'mem_available_percent'):
            lines.append('%s: %s' % (name, memory_line(policy['samples'])))
        if kind == ksm_scenario.REAL_GUESTS and policy.get('booted'):
            boots = sorted(policy['booted'].values())
            lines.append('%s: login prompts after %s s; %.0f MiB saved a '
                         'guest; %s' % (
                             name, ', '.join('%.0f' % b for b in boots),
                             policy['summary']['final_saved_gib'] * 1024
                             / max(1, len(boots)),
                             footprint_line(policy['summary'])))
    return lines + [''] if lines else []


def footprint_line(summary):
    """What the guests occupy at the end: a policy's saving depends on
    how much memory its guests made resident, too."""
    if summary.get('final_resident_gib') is None:
        return 'no resident size recorded'
    merged = summary.get('final_merged_gib', summary['final_saved_gib'])
    line = ('at the end the guests held %.3f GiB resident, %.3f GiB of it '
            'merged: they occupy %.3f GiB' % (
                summary['final_resident_gib'], merged,
                summary['final_footprint_gib']))
    if summary['final_saved_gib'] > merged:
        line += '; %.3f GiB more is on the zero page' % (
            summary['final_saved_gib'] - merged)
    return line


def memory_line(samples, limit=20.0):
    """MemAvailable over a run and, for the tuner, its time per state."""
    times, available = samples['t'], samples['mem_available_percent']
    known = [(t, a) for t, a in zip(times, available, strict=True)
             if a is not None]
    step = ksm_targets.RESOLUTION
    line = 'MemAvailable %.1f-%.1f%% of RAM, %.1f s under %g%%' % (
        min(a for _, a in known), max(a for _, a in known),
        step * sum(1 for _, a in known if a < limit), limit)
    states = [s for s in samples.get('state') or [] if s]
    if states:
        line += '; tuner %s' % ', '.join(
            '%s %.1f s' % (state, step * states.count(state))
            for state in sorted(set(states), key=states.index))
    return line


def summary_table(checks):
    """All scenarios' targets side by side."""
    rows = [(c.get('scenario') or '', MARKS[c['met']], c['target'],
             c['measured']) for c in checks]
    return rst_table(('scenario', 'result', 'target', 'measured'), rows)


def controllers(result):
    """What ksmtuned saw and what the adaptive tuner did."""
    lines = []
    policies = result['policies']
    if 'ksmtuned' in policies:
        lines.append('ksmtuned: ' + ksmtuned_summary(policies['ksmtuned']))
    if 'adaptive' in policies:
        r = policies['adaptive']['report']
        if r['hook_runs']:
            hooks = ('%d hook runs (%.1f s, %.1f CPU s in all)'
                     % (r['hook_runs'], r['hook_seconds'], r['hook_cpu']))
        else:  # real guests: libvirt ran the hook, untimed by the bench
            hooks = 'hook run by libvirt'
        lines.append('adaptive: %s, tuner CPU %s s, budget %d%%, poll %.1f '
                     's; decisions:' % (hooks, _number(r['controller_cpu'], 1),
                                        r['cpu_budget_percent'],
                                        r['poll_interval']))
        if r.get('hook_cpu_by_event'):
            lines.append('  hook CPU per run: ' + ', '.join(
                '%s %.2f s' % (event, cpu) for event, (_, cpu)
                in r['hook_cpu_by_event'].items()))
        lines += ['  ' + d for d in r['decisions'][:12]]
        if len(r['decisions']) > 12:
            lines.append('  ... %d more in the JSON'
                         % (len(r['decisions']) - 12))
    if 'advisor' in policies:
        lines.append('advisor: pages_to_scan over time: '
                     + knob_changes(policies['advisor']['samples']))
    for name, policy in policies.items():
        for other in policy['noise']:
            lines.append('noise during %s: mergeable process %s (pid %d)'
                         % (name, other['name'], other['pid']))
    return lines


def knob_changes(samples, limit=10):
    """'500 at 0 s, 10 at 1.5 s, ...': when pages_to_scan changed."""
    changes, last = [], None
    for t, value in zip(samples['t'], samples['pages_to_scan'],
                        strict=True):
        if value != last:
            changes.append('%d at %.1f s' % (value, t))
            last = value
    more = len(changes) - limit
    return ', '.join(changes[:limit]) + (' (+%d more)' % more
                                         if more > 0 else '')


def ksmtuned_summary(run):
    r = run['report']
    checks = r['checks']
    rss = max(run['samples']['guest_rss_pages'], default=0) * (
        mmap.PAGESIZE // 1024)
    if not checks:
        return ('no check in %.0f s (it checks every %d s)'
                % (result_duration(run), r['interval_seconds']))
    last = checks[-1]
    actions = sorted({c.get('action', '?') for c in checks})
    return ('%d checks (every %d s, shipped config); total %s KiB, '
            'threshold %s KiB; last check: QEMU RSS ("committed") %d KiB '
            '(our guests peaked at %d KiB), free %d KiB; actions: %s'
            % (len(checks), r['interval_seconds'], r.get('total_kib', '?'),
               r.get('thres_kib', '?'), last['committed_kib'], rss,
               last['free_kib'], ', '.join(actions)))


def result_duration(run):
    times = run['samples']['t']
    return times[-1] if times else 0.0


def write_json(result, path):
    with open(path, 'w') as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write('\n')


def load_pyplot():
    """matplotlib's pyplot (headless), or why it cannot be used."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        # Its font cache notice is not ours to show.
        logging.getLogger('matplotlib').setLevel(logging.WARNING)
        from matplotlib import pyplot
    except ImportError:
        return ('matplotlib is not installed (pip install '
                'matplotlib, or run tox -e bench-ksm); no plot written')
    return pyplot


def plot(result, path):
    """A PNG of saved memory and ksmd CPU over time, one line per policy.

    :returns: None, or why no plot was written (matplotlib missing).
    """
    pyplot = load_pyplot()
    if isinstance(pyplot, str):
        return pyplot
    figure, (saved, cpu) = pyplot.subplots(2, 1, sharex=True,
                                           figsize=(10, 6.5))
    page = result['host']['page_size']
    key = result.get('saving', ksm_metrics.SAVED)
    for name, policy in result['policies'].items():
        s = policy['samples']
        style = STYLES.get(name, {})
        saved.plot(s['t'], [v * page / GIB for v in s[key]],
                   label=name, **style)
        cpu.plot(s['t'], ksm_metrics.cpu_percent(s['t'], s['ksmd_cpu']),
                 label=name, **style)
    first = next(iter(result['policies'].values()))
    for event in first['events']:
        for axes in (saved, cpu):
            axes.axvline(event['time'], color='grey', linewidth=0.6,
                         linestyle='--' if event['kind'] == 'arrive'
                         else ':')
    saved.set_ylabel('memory saved (GiB)' if key == ksm_metrics.SAVED
                     else 'saved: merged + zero page (GiB)')
    cpu.set_ylabel('ksmd CPU (% of a core, 2 s)')
    cpu.set_xlabel('seconds (dashed: a wave arrives, dotted: it leaves)')
    saved.set_title(describe(result).split(';')[0], fontsize=9)
    saved.legend(loc='upper left', fontsize=8)
    for axes in (saved, cpu):
        axes.grid(True, linewidth=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return None
