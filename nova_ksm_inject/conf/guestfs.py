"""``[guestfs]`` options for the libguestfs handler."""

from oslo_config import cfg

from nova_ksm_inject.conf import base

guestfs_group = cfg.OptGroup('guestfs', title='libguestfs handler')

nova_guestfs_opts = [
    cfg.BoolOpt('debug',
                default=False,
                help="Enable libguestfs debug and trace output."),
]

guestfs_opts = [
    cfg.StrOpt('backend',
               default='direct',
               help="""
libguestfs backend (``LIBGUESTFS_BACKEND``).

``direct`` runs qemu itself; ``libvirt`` asks libvirtd to run it.
"""),
    cfg.ListOpt('backend_settings',
                default=[],
                help="""
libguestfs backend settings (``LIBGUESTFS_BACKEND_SETTINGS``).

Set ``force_tcg`` on hosts whose KVM the appliance cannot use (nested or
special hypervisors): the appliance then boots under software emulation.
"""),
    cfg.IntOpt('launch_timeout',
               default=120,
               min=5,
               help="Seconds to wait for the libguestfs appliance to come "
                    "up before the handler fails and the next is tried."),
    cfg.StrOpt('interface',
               default='auto',
               choices=[
                   ('auto', 'the Python binding when importable, else '
                            'guestmount'),
                   ('binding', 'only the Python binding (Debian '
                               'python3-guestfs)'),
                   ('guestmount', 'only the guestmount command (Debian '
                                  'guestmount)'),
               ],
               help="""
How the ``guestfs`` handler talks to libguestfs.

The Python binding keeps every file operation inside the appliance; the
``guestmount`` command exposes the guest over FUSE, where paths are then
resolved with openat2(RESOLVE_IN_ROOT) like any host mount. Both parse the
guest filesystem in the appliance, not in the host kernel.

Related options:

* ``backend``, ``backend_settings``, ``launch_timeout``
"""),
    cfg.IntOpt('guestmount_cpu_time',
               default=900,
               min=10,
               help="""
CPU seconds allowed to one ``guestmount`` and the appliance it starts
(``interface = guestmount``).

Past it the kernel kills them (RLIMIT_CPU), like ``qemu-img info``'s
limit (CVE-2015-5162). An appliance under software emulation (TCG) spends
15 to 25 CPU seconds booting.

Related options:

* ``guestmount_address_space``, ``[inject] qemu_img_cpu_time``
"""),
    cfg.IntOpt('guestmount_address_space',
               default=8 * 1024 ** 3,
               min=1024 ** 3,
               help="""
Address space in bytes allowed to ``guestmount`` and its appliance.

The appliance's qemu maps its guest RAM and, under TCG, a translation
cache of up to 1 GiB; 8 GiB leaves room for both.

Related options:

* ``guestmount_cpu_time``
"""),
]


def register_opts(conf):
    base.register_missing(conf, nova_guestfs_opts, guestfs_group)
    conf.register_opts(guestfs_opts, group=guestfs_group)


def list_opts():
    return {guestfs_group: nova_guestfs_opts + guestfs_opts}
