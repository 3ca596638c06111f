"""The command line every console script shares.

Standard library only: a command parses its arguments (and answers
``--help`` or a usage error) before it imports oslo or the library, which
is most of its start-up time. Config loading and error handling, which
need oslo, are in :mod:`nova_ksm_inject.cmd.common`.
"""

import argparse
import signal

PROG = 'nova-ksm-inject'
DEBUG_HELP = 'log commands, timings and handler details'


def config_parent(quiet=True, debug_help=DEBUG_HELP):
    """The options every command takes: ``--config-file``, ``--verbose``
    and ``--debug``.

    Their defaults are suppressed, so a parser can take them both before
    and after a subcommand (the parent is given to both); read them with
    ``getattr(args, name, default)`` or
    :func:`nova_ksm_inject.cmd.common.load_config_for`.

    :param quiet: the command logs warnings and errors only unless
        ``--verbose`` (False for daemons, which log at INFO anyway).
    :param debug_help: what ``--debug`` adds for this command.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        '--config-file', action='append', metavar='FILE',
        default=argparse.SUPPRESS,
        help='nova.conf to read (repeatable; default /etc/nova/nova.conf)')
    parent.add_argument(
        '--verbose', '-v', action='store_true', default=argparse.SUPPRESS,
        help='log each step at INFO (%s)' % (
            'default: warnings and errors only' if quiet else
            'this daemon does anyway'))
    parent.add_argument('--debug', action='store_true',
                        default=argparse.SUPPRESS, help=debug_help)
    return parent


def on_sigterm(stop=None):
    """Make SIGTERM stop this process the clean way.

    Without ``stop``, SIGTERM raises KeyboardInterrupt: the command
    unwinds exactly as on Ctrl-C (every device and mount undone, KSM
    restored). With ``stop`` (a ``threading.Event``), SIGTERM and SIGINT
    set it, for a daemon whose loop checks it and then cleans up.
    """
    if stop is None:
        signal.signal(signal.SIGTERM, _interrupt)
        return

    def _stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def _interrupt(signum, frame):
    raise KeyboardInterrupt()
