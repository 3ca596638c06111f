"""The scaling run's table, model and plot (see :mod:`ksm_scale`)."""

from bench import ksm_report

COLUMNS = ('memory', 'guests', 'fill (s)', 't95 (s)', 'boost CPU (s)',
           'settled CPU (% of a core)')
QUANTITIES = (('t95', 't95 (s)'), ('boost_cpu_seconds', 'boost CPU (s)'),
              ('settled_cpu_percent', 'settled ksmd CPU (% of a core)'))


def _n(value, digits=1):
    return 'n/a' if value is None else '%.*f' % (digits, value)


def rows(result):
    """Measured sizes, then the projected ones, labelled as such."""
    table = [('%d GiB' % p['gib'], '%d x %d MiB' % (p['guests'],
                                                    p['guest_mib']),
              _n(p['fill_seconds']), _n(p['t95']),
              _n(p['boost_cpu_seconds']), _n(p['settled_cpu_percent'], 2))
             for p in result['points']]
    for gib, values in sorted(result['model']['projection'].items(),
                              key=lambda item: int(item[0])):
        label = '%d GiB' % int(gib) if int(gib) < 1024 else '1 TiB'
        table.append((label, 'projection', '', _n(values['t95']),
                      _n(values['boost_cpu_seconds']),
                      _n(values['settled_cpu_percent'], 2)))
    return table


def model_lines(result):
    lines = []
    for key, label in QUANTITIES:
        line = result['model']['lines'].get(key)
        if line is not None:
            lines.append('  %s = %.2f + %.3f x GiB' % (label, line[0],
                                                       line[1]))
    return lines


def format_text(result):
    lines = ['Scenario scale: the adaptive tuner with 1 to 16 GiB of '
             'mergeable memory (85% identical), settled CPU over the '
             'settled window; projected rows come from the fitted model, '
             'not from a measurement.', '',
             ksm_report.rst_table(COLUMNS, rows(result)), '',
             'Model (least squares over the measured sizes):']
    lines += model_lines(result)
    for gib, why in sorted(result['skipped'].items()):
        lines.append('Skipped %s GiB: %s' % (gib, why))
    for p in result['points']:
        for other in p.get('noise', []):
            lines.append('noise at %d GiB: mergeable process %s (pid %d)'
                         % (p['gib'], other['name'], other['pid']))
    lines += ['', 'Targets:'] + ksm_report.target_lines(result['targets'])
    return '\n'.join(lines)


def plot(result, path):
    """Three panels against memory, measured points and the model (dashed
    where it is a projection). Returns None or why no plot was written."""
    pyplot = ksm_report.load_pyplot()
    if isinstance(pyplot, str):
        return pyplot
    figure, panels = pyplot.subplots(1, 3, figsize=(13, 4))
    points = result['points']
    measured_max = max((p['gib'] for p in points), default=1)
    xs = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    for axes, (key, label) in zip(panels, QUANTITIES, strict=True):
        axes.plot([p['gib'] for p in points], [p[key] for p in points],
                  'o', color='tab:purple', label='measured')
        line = result['model']['lines'].get(key)
        if line is not None:
            fit = [line[0] + line[1] * x for x in xs]
            inside = [x for x in xs if x <= measured_max]
            axes.plot(inside, fit[:len(inside)], '-', color='tab:purple',
                      label='model')
            axes.plot(xs[len(inside) - 1:], fit[len(inside) - 1:], '--',
                      color='tab:purple', label='projection')
        axes.axvspan(measured_max, 1024, color='0.92')
        axes.set_xscale('log', base=2)
        axes.set_xlabel('mergeable memory (GiB); grey: projection')
        axes.set_title(label, fontsize=9)
        axes.grid(True, linewidth=0.3)
        if key == 'settled_cpu_percent':
            axes.axhline(result['settled_cpu_ceiling'], color='tab:red',
                         linewidth=0.8, label='ceiling')
            axes.set_ylim(0, 2 * result['settled_cpu_ceiling'])
        axes.legend(fontsize=7, loc='upper left')
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return None
