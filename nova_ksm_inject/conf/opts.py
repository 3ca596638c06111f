"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

import collections

from nova_ksm_inject.conf import guestfs
from nova_ksm_inject.conf import inject
from nova_ksm_inject.conf import ksm
from nova_ksm_inject.conf import libvirt

_MODULES = (inject, libvirt, guestfs, ksm)


def list_opts():
    merged = collections.OrderedDict()
    for module in _MODULES:
        for group, opts in module.list_opts().items():
            merged.setdefault(group, []).extend(opts)
    return [(group, opts) for group, opts in merged.items()]
