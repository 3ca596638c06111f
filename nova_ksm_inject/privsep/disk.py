"""Privileged entrypoints for image injection (``[privsep_inject]``).

Each takes plain data and does the whole job in one call; the checks on
what the caller sent are in :mod:`nova_ksm_inject.disk.job`.
"""

import os

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.privsep import checks
from nova_ksm_inject.privsep import contexts


@contexts.inject_pctxt.entrypoint
def inject_image(job):
    """Inspect, attach, mount, write, unmount and detach one image.

    :param job: a dict from :func:`nova_ksm_inject.disk.job.build`.
    :returns: the result dict of :func:`nova_ksm_inject.disk.chain.run`.
    """
    from nova_ksm_inject.disk import chain

    # The daemon runs with umask 0; files we create are ours alone.
    os.umask(0o022)
    checks.check_config_files()
    return chain.run(job, confined=True, conf=CONF)


@contexts.inject_pctxt.entrypoint
def sweep_journals():
    """Undo what killed injections left in ``[inject] state_dir``."""
    from nova_ksm_inject.disk import sweep

    os.umask(0o022)
    checks.check_config_files()
    return [r.to_dict() for r in sweep.sweep(CONF.inject.state_dir)]
