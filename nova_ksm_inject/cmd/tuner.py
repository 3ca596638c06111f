"""``nova-ksm-tuner``: keep KSM in line with the guests, in the foreground.

Run it under systemd (etc/systemd/nova-ksm-tuner.service) or any
supervisor; SIGTERM or SIGINT stop it cleanly (restoring the saved KSM
settings when ``[ksm] restore_on_exit`` is true).
"""

import argparse
import sys
import threading

from nova_ksm_inject.cmd import base
from nova_ksm_inject.cmd import common
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import settings as ksm_settings
from nova_ksm_inject.ksm import statedir as ksm_statedir
from nova_ksm_inject.ksm import tuner as ksm_tuner

PROG = 'nova-ksm-tuner'


def build_parser():
    return argparse.ArgumentParser(
        prog=PROG, description=__doc__.split('\n')[0], parents=[
            base.config_parent(quiet=False, debug_help='log every sample')])


def serve(args, stop):
    """Load the config and run the tuner until ``stop`` is set."""
    common.load_config_for(args, prog=PROG, quiet=False)
    settings = ksm_settings.KsmSettings.from_conf(CONF)
    host = ksm_host.KsmHost.for_settings(settings)
    statedir = ksm_statedir.KsmStateDir(settings.state_dir)
    try:
        tuner = ksm_tuner.Tuner(settings, host, statedir, sleeper=stop.wait)
        tuner.run(stop.is_set)
    finally:
        host.close()
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    stop = threading.Event()
    base.on_sigterm(stop)
    return common.run(serve, args, stop, prog=PROG)


if __name__ == '__main__':
    sys.exit(main())
