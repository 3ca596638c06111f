"""Configuration for nova-ksm-inject.

One module per option group, each with ``register_opts(conf)`` and
``list_opts()``, as nova does. Options whose names nova already defines
(``use_cow_images``, ``[libvirt] inject_key``...) are registered only when
absent, so the package can live in the same process as nova-compute: nova
registers its own definitions first and ours step aside.
"""

from oslo_config import cfg

from nova_ksm_inject.conf import guestfs
from nova_ksm_inject.conf import inject
from nova_ksm_inject.conf import ksm
from nova_ksm_inject.conf import libvirt

CONF = cfg.CONF

_MODULES = (inject, libvirt, guestfs, ksm)


def register_opts(conf):
    for module in _MODULES:
        module.register_opts(conf)


register_opts(CONF)
