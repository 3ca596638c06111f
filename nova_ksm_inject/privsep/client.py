"""Privileged work, in this process when it is root, else through privsep.

What the rest of the package calls: each function here is one privileged
job taking and returning plain data. A root caller (the command run as
root, the hook, the tuner) runs it directly: no daemon, no sudo, no
rootwrap. Anyone else goes through the oslo.privsep daemons of
:mod:`nova_ksm_inject.privsep.contexts`, whose entrypoints check what they
receive themselves (``confined``). Failing to start a daemon becomes a
:class:`~nova_ksm_inject.exception.PrivilegeError` naming the fix.

Importing this module does not import oslo.privsep: only the daemon path
does, on first use.
"""

import logging
import os

from nova_ksm_inject import exception

#: The logger oslo.privsep gives the helper's standard error (oslo.log
#: names "oslo_x" modules' loggers "oslo.x").
HELPER_LOGGER = 'oslo.privsep.daemon'
#: False keeps that output out of the log (the commands' default): it is
#: in the error message anyway.
LOG_HELPER_OUTPUT = True
#: True (the commands run by a user) sets privsep's root helper up at the
#: first privileged call; nova-compute has nova's set up already.
INIT_PRIVSEP = False


def is_root():
    """True when this process does privileged work itself."""
    return os.geteuid() == 0


def inject_image(job, conf):
    """Run one injection job; see :func:`nova_ksm_inject.disk.chain.run`."""
    if is_root():
        from nova_ksm_inject.disk import chain
        return chain.run(job, confined=False, conf=conf)
    from nova_ksm_inject.privsep import disk
    return _through('injecting into %s' % job.get('image'), 'privsep_inject',
                    disk.inject_image, job)


def sweep_journals(conf):
    """Undo what killed injections left; a list of result dicts."""
    if is_root():
        from nova_ksm_inject.disk import sweep
        return [r.to_dict() for r in sweep.sweep(conf.inject.state_dir)]
    from nova_ksm_inject.privsep import disk
    return _through('the cleanup sweep', 'privsep_inject',
                    disk.sweep_journals)


def ksm_apply(conf, force_run=None, unmerge=False, connection=None):
    """Bring KSM to ``[ksm]`` now; the ApplyResult as a dict.

    :param connection: an open libvirt connection for the knobs libvirt
        covers; used only by a root caller (it cannot cross privsep).
    """
    if is_root():
        from nova_ksm_inject.ksm import apply as ksm_apply_mod
        return ksm_apply_mod.apply(conf, force_run=force_run,
                                   unmerge=unmerge, connection=connection)
    from nova_ksm_inject.privsep import ksm
    return _through('changing KSM', 'privsep_ksm', ksm.apply_ksm,
                    force_run, unmerge)


def ksm_restore(conf):
    """Restore the KSM settings saved before the first change."""
    if is_root():
        from nova_ksm_inject.ksm import apply as ksm_apply_mod
        return ksm_apply_mod.restore(conf)
    from nova_ksm_inject.privsep import ksm
    return _through('restoring KSM', 'privsep_ksm', ksm.restore_ksm)


class _HelperOutput(logging.Handler):
    """Keeps what the privsep helper printed (sudo's complaint, say) for
    the error message, while it is held out of the log."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage().replace('privsep log: ', ''))


def _through(what, section, entrypoint, *args):
    global INIT_PRIVSEP
    from oslo_privsep import daemon

    if INIT_PRIVSEP:
        from nova_ksm_inject.privsep import contexts
        contexts.init()
        INIT_PRIVSEP = False

    output = _HelperOutput()
    helper_log = logging.getLogger(HELPER_LOGGER)
    helper_log.addHandler(output)
    helper_log.propagate = LOG_HELPER_OUTPUT
    try:
        return entrypoint(*args)
    except daemon.FailedToDropPrivileges as err:
        said = [line for line in output.lines if line != str(err)]
        reason = '%s%s' % (err, ': %s' % said[-1] if said else '')
        raise exception.PrivilegeError(what=what, reason=reason,
                                       section=section) from err
    except (OSError, EOFError) as err:
        # The daemon could not be reached, or went away mid-call.
        raise exception.PrivilegeError(
            what=what, reason='the privsep daemon is unreachable (%s: %s)'
            % (type(err).__name__, err), section=section) from err
    finally:
        helper_log.removeHandler(output)
        helper_log.propagate = True
