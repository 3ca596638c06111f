"""The oslo.privsep contexts of nova-ksm-inject, and how they start.

Importing this module imports oslo.privsep (and eventlet, about 0.15 s);
only the entrypoint modules and :mod:`nova_ksm_inject.privsep.client`'s
daemon path import it. The contexts keep the pypaths
``nova_ksm_inject.privsep.inject_pctxt`` and
``nova_ksm_inject.privsep.ksm_pctxt`` (the rootwrap filters and the
helper's accepted names), which the package resolves lazily.
"""

import shlex

from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

from nova_ksm_inject.conf import CONF

#: Where the contexts are found by name (their pypaths): the package,
#: which imports them from here on first use.
PACKAGE = 'nova_ksm_inject.privsep'

#: Logger the daemons' log records are replayed under in the caller, so
#: that the CLI's verbosity settings apply to them too.
DAEMON_LOGGER = 'nova_ksm_inject.privsep.daemon'

#: Capabilities each context's own code keeps (measured: the smallest
#: sets with which every functional test passes; the README explains each).
#: The fixed tools a daemon runs (losetup, mount, qemu-storage-daemon...)
#: are started by uid 0 and so run with root's full set, as under nova's
#: own privsep contexts: what they may do is bounded by the arguments the
#: daemon builds, never by the caller.
CAPABILITIES = {
    # DAC_OVERRIDE: write guest files and directories whatever their mode
    # and owner; CHOWN: keep a replaced file's owner, give new ones theirs;
    # FOWNER: set modes on guest files root does not own.
    'privsep_inject': [caps.CAP_DAC_OVERRIDE, caps.CAP_CHOWN,
                       caps.CAP_FOWNER],
    # KSM's sysfs files and the state directory belong to uid 0, which the
    # daemon keeps; DAC_READ_SEARCH reads the guests' /proc/<pid>/ksm_stat
    # (mode 0400, owned by the qemu user) to count mergeable guests.
    'privsep_ksm': [caps.CAP_DAC_READ_SEARCH],
}

#: The console script (:mod:`nova_ksm_inject.cmd.privsep_helper`) that
#: starts our daemons, pinning root's configuration files.
HELPER = 'nova-ksm-inject-privsep-helper'


class HelperContext(priv_context.PrivContext):
    """A context started by :data:`HELPER` unless its ``helper_command``
    is set: the root helper prefix, then exactly the two arguments that
    helper accepts (no ``--config-file``, which it would refuse)."""

    def helper_command(self, sockpath):
        if self.conf.helper_command:
            return super().helper_command(sockpath)
        # What priv_context.init() set (nova's rootwrap in nova-compute,
        # ours from init() below); privsep keeps no public getter.
        prefix = list(getattr(priv_context, '_HELPER_COMMAND_PREFIX',
                              ['sudo']))
        return prefix + [HELPER, '--privsep_context', self.pypath,
                         '--privsep_sock_path', sockpath]


inject_pctxt = HelperContext(
    'nova_ksm_inject',
    cfg_section='privsep_inject',
    pypath=PACKAGE + '.inject_pctxt',
    capabilities=CAPABILITIES['privsep_inject'],
    logger_name=DAEMON_LOGGER,
)

ksm_pctxt = HelperContext(
    'nova_ksm_inject',
    cfg_section='privsep_ksm',
    pypath=PACKAGE + '.ksm_pctxt',
    capabilities=CAPABILITIES['privsep_ksm'],
    logger_name=DAEMON_LOGGER,
)

CONTEXTS = (inject_pctxt, ksm_pctxt)


def init(root_helper=None):
    """Set the command prefix that starts :data:`HELPER` as root.

    Console scripts call it once; inside nova-compute nova has already
    called ``priv_context.init`` with its own root helper, and this is
    not called. A context's ``helper_command`` option, when set, wins.
    """
    helper = root_helper or CONF.inject.root_helper
    priv_context.init(root_helper=shlex.split(helper))
