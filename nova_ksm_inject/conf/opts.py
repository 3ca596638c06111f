"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

import collections
import copy

from nova_ksm_inject.conf import guestfs
from nova_ksm_inject.conf import inject
from nova_ksm_inject.conf import ksm
from nova_ksm_inject.conf import libvirt

_MODULES = (inject, libvirt, guestfs, ksm)


def _privsep_opts():
    """oslo.privsep's options in our contexts' sections, with the
    defaults those contexts set."""
    from oslo_privsep import capabilities
    from oslo_privsep import priv_context

    from nova_ksm_inject.privsep import contexts

    listed = {}
    for context in contexts.CONTEXTS:
        opts = copy.deepcopy(priv_context.OPTS)
        defaults = {
            'capabilities': [capabilities.CAPS_BYVALUE[c] for c in
                             contexts.CAPABILITIES[context.cfg_section]],
            'logger_name': contexts.DAEMON_LOGGER}
        for opt in opts:
            if opt.dest in defaults:
                opt.default = defaults[opt.dest]
        listed[context.cfg_section] = opts
    return listed


def list_opts():
    merged = collections.OrderedDict()
    for module in _MODULES:
        for group, opts in module.list_opts().items():
            merged.setdefault(group, []).extend(opts)
    merged.update(_privsep_opts())
    return [(group, opts) for group, opts in merged.items()]


def _nova_defined():
    """The options nova itself defines, which its own sample lists."""
    # img_handlers is ours: nova dropped its option of that name long ago.
    return ([o for o in inject.nova_default_opts if o.name != 'img_handlers']
            + libvirt.libvirt_opts + guestfs.nova_guestfs_opts)


def list_opts_beside_nova():
    """Our options minus nova's (``nova_ksm_inject.nova`` namespace), for
    generating one nova.conf sample with nova's namespaces and ours."""
    skip = {id(opt) for opt in _nova_defined()}
    listed = []
    for group, opts in list_opts():
        mine = [opt for opt in opts if id(opt) not in skip]
        if mine:
            listed.append((group, mine))
    return listed
