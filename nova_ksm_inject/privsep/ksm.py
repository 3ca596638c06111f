"""Privileged entrypoints for KSM (``[privsep_ksm]``).

The daemon decides from its own ``[ksm]`` configuration; the caller only
chooses the action. Knobs go through sysfs: a libvirt connection cannot
cross the privsep channel.
"""

import os

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.privsep import checks
from nova_ksm_inject.privsep import contexts


@contexts.ksm_pctxt.entrypoint
def apply_ksm(force_run=None, unmerge=False):
    """Apply ``[ksm]`` now (``force_run``: True enable, False disable)."""
    from nova_ksm_inject.ksm import apply as ksm_apply

    if force_run not in (None, True, False) or \
            not isinstance(unmerge, bool):
        raise ValueError('force_run must be true, false or null and '
                         'unmerge a boolean')
    os.umask(0o022)
    checks.check_config_files()
    return ksm_apply.apply(CONF, force_run=force_run, unmerge=unmerge)


@contexts.ksm_pctxt.entrypoint
def restore_ksm():
    """Restore the KSM settings saved before the first change."""
    from nova_ksm_inject.ksm import apply as ksm_apply

    os.umask(0o022)
    checks.check_config_files()
    return ksm_apply.restore(CONF)
