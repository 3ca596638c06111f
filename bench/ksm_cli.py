"""The KSM benchmark (``tox -e bench-ksm``, or ``python -m bench.ksm_cli``
from the repository's root): KSM policies side by side on this host's
kernel.

Scenarios (``--scenario``, several with commas, or ``all``):

* ``waves`` (default): waves of synthetic guests arrive and leave; the
  kernel defaults, ``pages_to_scan = 1000000000``, Debian's ksmtuned, the
  kernel's advisor and nova-ksm-tuner, one after the other;
* ``real-guests`` (``--real-guests``): Debian guests booting under a
  private libvirtd (our hook installed for the tuner);
* ``churn``: a guest arrives every 10 s for 5 minutes while others leave;
* ``share-nothing``: guests with nothing in common;
* ``pressure``: waves on a host short of memory (ballast);
* ``scale`` (``--scale``): the tuner at 1 to 16 GiB, with a model
  projected to 256 GiB and 1 TiB;
* ``grid`` (``--seed N``, ``--grid-cases K``): K waves workloads drawn
  at random (:mod:`ksm_grid`), static-max and the tuner on each, every
  case held to the targets.

Each scenario ends with a ``met``/``MISSED`` line per target. Needs root;
holds the KSM test lock; restores the KSM settings it found, also on
Ctrl-C. The tuner uses the ``[ksm]`` options of nova.conf
(``--config-file``), with its own temporary state directory.
"""

import argparse
import dataclasses
import os
import sys

from bench import ksm
from bench import ksm_report
from bench import ksm_scenario
from nova_ksm_inject.cmd import base
from nova_ksm_inject.cmd import common
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm import settings as ksm_settings

# Errors and logs are named for the tox env that runs it.
PROG = 'bench-ksm'
SCALE = 'scale'
GRID = 'grid'
SCENARIOS = ksm_scenario.KINDS + (SCALE, GRID)
# --long: bigger guests, longer runs, and a host short of memory.
LONG = {'guest_mib': 1024, 'duration': 600.0}
OVERRIDES = ('guests', 'waves', 'guest_mib', 'identical', 'duration')


def policy_list(text):
    """``default,adaptive`` -> ['default', 'adaptive'], names checked."""
    return _names(text, ksm.ORDER, 'policy')


def scenario_list(text):
    if text.strip() == 'all':
        return list(SCENARIOS)
    return _names(text, SCENARIOS, 'scenario')


def case_list(text):
    """``1,3`` -> {1, 3}."""
    try:
        cases = {int(n) for n in text.split(',') if n.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a list of case '
                                         'numbers' % text)
    if not cases or min(cases) < 1:
        raise argparse.ArgumentTypeError('case numbers start at 1')
    return cases


def _names(text, valid, what):
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            'unknown %s %s; choose from %s' % (
                what, ', '.join(unknown) or '(none)', ','.join(valid)))
    return list(dict.fromkeys(names))


def _bounded(kind, low, high=None):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not a number' % text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                '%s is out of range [%s, %s]' % (text, low, high or 'inf'))
        return value
    return parse


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description='KSM policies side by side on this host\'s '
        'kernel. The adaptive '
        'tuner uses the [ksm] options of nova.conf (--config-file).',
        parents=[base.config_parent(
            debug_help='log what the benchmark does, in detail')])
    parser.add_argument('--scenario', type=scenario_list,
                        help='comma-separated, or "all" (default: waves): '
                             + ','.join(SCENARIOS))
    parser.add_argument('--real-guests', action='store_true',
                        help='the real-guest scenario (Debian under '
                             'libvirt)')
    parser.add_argument('--scale', action='store_true',
                        help='the scaling run (1 to 16 GiB)')
    parser.add_argument('--policies', type=policy_list,
                        help='comma-separated, run in this order (default: '
                             'each scenario\'s own)')
    parser.add_argument('--guests', type=_bounded(int, 1),
                        help='guests per wave')
    parser.add_argument('--waves', type=_bounded(int, 1, 60),
                        help='waves of guests')
    parser.add_argument('--guest-mib', type=_bounded(int, 4),
                        help='memory per guest')
    parser.add_argument('--identical', type=_bounded(float, 0.0, 1.0),
                        help='share of pages identical in every guest')
    parser.add_argument('--duration', type=_bounded(float, 10.0),
                        help='seconds per policy')
    parser.add_argument('--scale-sizes', default='1,2,4,8,16',
                        help='GiB of mergeable memory for --scale')
    parser.add_argument('--seed', type=_bounded(int, 0), default=1,
                        help='grid: the seed its cases are drawn from')
    parser.add_argument('--grid-cases', type=_bounded(int, 1),
                        default=5, help='grid: how many cases')
    parser.add_argument('--grid-only', type=case_list,
                        help='grid: only these case numbers (comma-'
                             'separated), e.g. to run a disturbed one again')
    parser.add_argument('--grid-oracle', action='store_true',
                        help='grid: also run the oracle on each case (ksmd '
                             'flat out until each wave reaches the level '
                             'static-max\'s run gave it and its pages were '
                             'visited twice, stopped between): '
                             'tells which misses no policy that stops '
                             'scanning between waves could meet; adds a '
                             'third run per case')
    parser.add_argument('--long', action='store_true',
                        help='waves: bigger guests, longer runs, and '
                             'ballast memory so the host is short of memory')
    parser.add_argument('--json', metavar='FILE',
                        help='write every number and sample as JSON')
    parser.add_argument('--plot', metavar='FILE',
                        help='write a PNG per scenario (FILE, or '
                             'FILE-SCENARIO.png for several; matplotlib)')
    return parser


def scenarios_from_args(args):
    """The scenario names asked for, in a stable order."""
    names = list(args.scenario or [])
    if args.real_guests:
        names.append(ksm_scenario.REAL_GUESTS)
    if args.scale:
        names.append(SCALE)
    return list(dict.fromkeys(names or [ksm_scenario.WAVES]))


def scenario_from_args(args, kind=ksm_scenario.WAVES):
    """The :class:`Scenario` of ``kind``: its preset, --long for waves,
    then explicit values."""
    preset = ksm_scenario.PRESETS[kind][0]
    values = {}
    if kind == ksm_scenario.WAVES and args.long:
        values = dict(LONG, pressure=True)
    for name in OVERRIDES:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return dataclasses.replace(preset, **values)


def progress(message):
    print(message, file=sys.stderr, flush=True)


def plot_path(path, kind, several):
    if not several:
        return path
    root, ext = os.path.splitext(path)
    return '%s-%s%s' % (root, kind, ext or '.png')


def run_scenario(kind, args, settings):
    """(result, text) of one scenario."""
    if kind == SCALE:
        from bench import ksm_scale
        from bench import ksm_scale_report
        sizes = [int(v) for v in args.scale_sizes.split(',') if v.strip()]
        result = ksm_scale.run_locked(sizes, settings, progress=progress)
        return result, ksm_scale_report.format_text(result)
    if kind == GRID:
        from bench import ksm_grid
        from bench import ksm_grid_report
        result = ksm_grid.run(args.seed, args.grid_cases, settings,
                              progress=progress, on_case=lambda partial:
                              _write_json(args, partial),
                              only=args.grid_only,
                              oracle=args.grid_oracle)
        return result, ksm_grid_report.format_text(result)
    scenario = scenario_from_args(args, kind)
    policies = args.policies or list(ksm_scenario.PRESETS[kind][1])
    result = ksm.run(scenario, policies, settings, progress=progress)
    return result, ksm_report.format_text(result)


def bench(args):
    common.load_config_for(args, prog=PROG)
    settings = ksm_settings.KsmSettings.from_conf(CONF)
    kinds = scenarios_from_args(args)
    results, checks = {}, []
    try:
        for kind in kinds:
            results[kind], text = run_scenario(kind, args, settings)
            checks += results[kind]['targets']
            print(text + '\n', flush=True)
            # What a long run measured survives a later failure.
            _write_outputs(args, kinds, results, kind)
    except KeyboardInterrupt:
        return common.fail('interrupted; guests stopped and the KSM '
                           'settings restored', 130, PROG)
    if len(kinds) > 1:
        print('Targets of this run, side by side:\n')
        print(ksm_report.summary_table(checks))
    return 0


def _write_outputs(args, kinds, results, kind):
    """The JSON so far and ``kind``'s plot."""
    _write_json(args, results if len(kinds) > 1 else results[kinds[0]])
    if not args.plot:
        return
    from bench import ksm_grid_report
    from bench import ksm_scale_report
    path = plot_path(args.plot, kind, len(kinds) > 1)
    draw = {SCALE: ksm_scale_report.plot,
            GRID: lambda result, path: ksm_grid_report.plot([result],
                                                            path),
            }.get(kind, ksm_report.plot)
    why_not = draw(results[kind], path)
    progress(why_not or 'Wrote %s' % path)


def _write_json(args, results):
    if args.json:
        ksm_report.write_json(results, args.json)
        progress('Wrote %s' % args.json)


def main(argv=None):
    args = build_parser().parse_args(argv)
    # SIGTERM cleans up like Ctrl-C: guests stopped, KSM restored.
    base.on_sigterm()
    return common.run(bench, args, prog=PROG)


if __name__ == '__main__':
    sys.exit(main())
