"""``nova-ksm-bench``: KSM policies side by side on this host's kernel.

Runs the kernel defaults, ``pages_to_scan = 1000000000``, Debian's
ksmtuned, the kernel's advisor and nova-ksm-tuner one after the other
against the same waves of synthetic guests, then prints a table (and
writes JSON and a PNG plot on request). Needs root; holds the KSM test
lock; restores the KSM settings it found, also on Ctrl-C. The adaptive
tuner uses the ``[ksm]`` options of nova.conf (``--config-file``), with
its own temporary state directory.
"""

import argparse
import sys

from nova_ksm_inject.bench import ksm
from nova_ksm_inject.bench import ksm_report
from nova_ksm_inject.bench import ksm_scenario
from nova_ksm_inject.cmd import base
from nova_ksm_inject.cmd import common
from nova_ksm_inject.ksm import settings as ksm_settings

PROG = 'nova-ksm-bench'
# --long: bigger guests, longer runs, and a host short of memory.
LONG = {'guest_mib': 1024, 'duration': 600.0}
DEFAULTS = {'guests': 4, 'waves': 3, 'guest_mib': 256, 'duration': 180.0,
            'identical': 0.85}


def policy_list(text):
    """``default,adaptive`` -> ['default', 'adaptive'], names checked."""
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in ksm.POLICIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            'unknown policy %s; choose from %s' % (
                ', '.join(unknown) or '(none)',
                ','.join(ksm.ORDER)))
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
        prog=PROG, description=__doc__.split('\n')[0] + ' The adaptive '
        'tuner uses the [ksm] options of nova.conf (--config-file).',
        parents=[base.config_parent(
            debug_help='log what the benchmark does, in detail')])
    parser.add_argument('--policies', type=policy_list,
                        default=list(ksm.ORDER),
                        help='comma-separated, run in this order '
                             '(default: %s)' % ','.join(ksm.ORDER))
    parser.add_argument('--guests', type=_bounded(int, 1),
                        help='guests per wave (default 4)')
    parser.add_argument('--waves', type=_bounded(int, 1, 20),
                        help='waves of guests (default 3)')
    parser.add_argument('--guest-mib', type=_bounded(int, 4),
                        help='memory per guest (default 256, --long 1024)')
    parser.add_argument('--identical', type=_bounded(float, 0.0, 1.0),
                        help='share of pages identical in every guest '
                             '(default 0.85)')
    parser.add_argument('--duration', type=_bounded(float, 10.0),
                        help='seconds per policy (default 180, --long 600)')
    parser.add_argument('--long', action='store_true',
                        help='bigger guests, longer runs, and ballast '
                             'memory so the host is short of memory')
    parser.add_argument('--json', metavar='FILE',
                        help='write every number and sample as JSON')
    parser.add_argument('--plot', metavar='FILE',
                        help='write a PNG of saved memory and ksmd CPU '
                             '(needs matplotlib)')
    return parser


def scenario_from_args(args):
    """The :class:`Scenario` asked for: explicit values, else --long's,
    else the defaults."""
    values = {}
    for name, default in DEFAULTS.items():
        given = getattr(args, name)
        values[name] = given if given is not None else (
            LONG.get(name, default) if args.long else default)
    return ksm_scenario.Scenario(pressure=args.long, **values)


def progress(message):
    print(message, file=sys.stderr, flush=True)


def bench(args):
    common.load_config_for(args, prog=PROG)
    settings = ksm_settings.KsmSettings.from_conf()
    scenario = scenario_from_args(args)
    try:
        result = ksm.run(scenario, args.policies, settings,
                         progress=progress)
    except KeyboardInterrupt:
        return common.fail('interrupted; guests stopped and the KSM '
                           'settings restored', 130)
    print(ksm_report.format_text(result))
    if args.json:
        ksm_report.write_json(result, args.json)
        progress('Wrote %s' % args.json)
    if args.plot:
        why_not = ksm_report.plot(result, args.plot)
        progress(why_not or 'Wrote %s' % args.plot)
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    # SIGTERM cleans up like Ctrl-C: guests stopped, KSM restored.
    base.on_sigterm()
    return common.run(bench, args)


if __name__ == '__main__':
    sys.exit(main())
