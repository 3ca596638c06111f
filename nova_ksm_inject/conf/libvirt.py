"""``[libvirt]`` injection options, with nova's names and meanings."""

from oslo_config import cfg

from nova_ksm_inject.conf import base

libvirt_group = cfg.OptGroup('libvirt', title='Libvirt options')

libvirt_opts = [
    cfg.IntOpt('inject_partition',
               default=-2,
               min=-2,
               help="""
Which partition of the guest disk to inject into.

Possible values:

* -2: injection disabled (nova's default)
* -1: inspect the image to find the root filesystem (handlers that can
  inspect only, e.g. ``guestfs``)
* 0: the disk holds a filesystem directly, without a partition table
* N: partition number N
"""),
    cfg.BoolOpt('inject_key',
                default=False,
                help="Inject the instance's SSH public key at boot."),
    cfg.BoolOpt('inject_password',
                default=False,
                help="Inject the admin password at boot."),
]


def register_opts(conf):
    base.register_missing(conf, libvirt_opts, libvirt_group)


def list_opts():
    return {libvirt_group: libvirt_opts}
