"""``nova-ksm-inject``: inject data into guest images and manage KSM.

A thin console script: parse arguments, load nova.conf, call the library,
turn its exceptions into one line on stderr and an exit code.
"""

import argparse
import signal
import sys

from nova_ksm_inject.cmd import common
from nova_ksm_inject.cmd import disk

try:  # the KSM commands live in their own module
    from nova_ksm_inject.cmd import ksm
except ImportError:  # pragma: no cover - during partial installs only
    ksm = None

DESCRIPTION = """\
Inject data (ssh key, network config, metadata, admin password, files)
into guest disk images through the ordered chain of image handlers
configured in nova.conf (img_handlers, use_cow_images), and make Kernel
Samepage Merging pay off on this hypervisor.

Configuration is read from /etc/nova/nova.conf unless --config-file (or
NOVA_KSM_INJECT_CONFIG_FILES, colon-separated) says otherwise.
"""


def config_parent():
    """Options every subcommand takes (also accepted before it)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        '--config-file', action='append', metavar='FILE',
        default=argparse.SUPPRESS,
        help='nova.conf to read (repeatable; default /etc/nova/nova.conf)')
    parent.add_argument('--verbose', '-v', action='store_true',
                        default=argparse.SUPPRESS,
                        help='log each step at INFO (default: warnings '
                             'and errors only)')
    parent.add_argument('--debug', action='store_true',
                        default=argparse.SUPPRESS,
                        help='log commands, timings and handler details')
    return parent


def build_parser():
    parent = config_parent()
    parser = argparse.ArgumentParser(
        prog=common.PROG, description=DESCRIPTION, parents=[parent],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    disk.add_parsers(sub, parent)
    if ksm is not None:
        ksm.add_parser(sub, parent)
    return parser


def _sigterm(signum, frame):
    # Unwind like Ctrl-C: every attached device and mount is undone.
    raise KeyboardInterrupt()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)

    def _run():
        common.load_config(getattr(args, 'config_file', None),
                           debug=getattr(args, 'debug', False),
                           quiet=not getattr(args, 'verbose', False))
        common.init_privsep()
        return args.func(args)

    return common.run(_run)


if __name__ == '__main__':
    sys.exit(main())
