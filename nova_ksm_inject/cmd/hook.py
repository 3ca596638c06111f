"""``nova-ksm-libvirt-hook``: the libvirt qemu hook for KSM.

libvirt runs it as ``nova-ksm-libvirt-hook DOMAIN OP SUBOP EXTRA`` with
the domain XML on stdin and a cleared environment, so the configuration
comes from /etc/nova/nova.conf or NOVA_KSM_INJECT_CONFIG_FILES (set by
the shim ``nova-ksm-inject ksm install-hook`` writes).

It exits 0 whatever happens to KSM (the error is logged): a guest must
never fail to start because of KSM. ``[ksm] strict = true`` makes errors
exit 1, which makes libvirt refuse the start.
"""

import os
import signal
import sys

PROG = 'nova-ksm-libvirt-hook'
# Hard cap on one invocation: libvirt waits for us with locks held.
TIMEOUT_SECONDS = 10


def _timeout(signum, frame):
    sys.stderr.write('%s: gave up after %ds; KSM left as it was\n'
                     % (PROG, TIMEOUT_SECONDS))
    os._exit(0)


def _log_to_file(path):
    import logging
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(process)d %(levelname)s %(name)s %(message)s'))
    logging.getLogger().addHandler(handler)


def run_hook(argv, xml_text):
    """Load the config and handle one event; returns the exit code."""
    from oslo_log import log as logging

    from nova_ksm_inject import exception
    from nova_ksm_inject.cmd import common
    from nova_ksm_inject.ksm import hook
    from nova_ksm_inject.ksm import host as ksm_host
    from nova_ksm_inject.ksm import settings as ksm_settings
    from nova_ksm_inject.ksm import statedir as ksm_statedir

    log = logging.getLogger(PROG)
    strict = False
    try:
        common.load_config(None, prog=PROG)
        settings = ksm_settings.KsmSettings.from_conf()
        strict = settings.strict
        if settings.hook_log_file:
            _log_to_file(settings.hook_log_file)
        # Never a libvirt connection here: it would deadlock libvirtd.
        host = ksm_host.KsmHost(connection=None)
        statedir = ksm_statedir.KsmStateDir(settings.state_dir)
        hook.Hook(settings, host, statedir).handle(
            argv[0], argv[1], argv[2], xml_text)
        return 0
    except exception.NovaKsmInjectError as err:
        log.error('KSM not adjusted for guest %s (%s %s): %s', argv[0],
                  argv[1], argv[2], err)
        sys.stderr.write('%s: error: %s\n' % (PROG, err))
    except Exception as err:  # a hook must not fail a guest start
        log.exception('KSM hook failed for guest %s (%s %s)', argv[0],
                      argv[1], argv[2])
        sys.stderr.write('%s: error: %s\n' % (PROG, err))
    return 1 if strict else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(TIMEOUT_SECONDS)
    # Read all of stdin even when ignoring the event: libvirt writes the
    # XML and must not see a broken pipe.
    xml_text = sys.stdin.read()
    if len(argv) < 3:
        sys.stderr.write('usage: %s DOMAIN OP SUBOP [EXTRA] < domain.xml\n'
                         % PROG)
        return 0
    from nova_ksm_inject.ksm import hookevents
    if not hookevents.is_relevant(argv[1], argv[2]):
        return 0
    return run_hook(argv, xml_text)


if __name__ == '__main__':
    sys.exit(main())
