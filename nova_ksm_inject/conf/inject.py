"""Options for image data injection: ``[DEFAULT]`` (nova's names) and
``[inject]`` (this project's)."""

from oslo_config import cfg

from nova_ksm_inject.conf import base

# Names nova has defined for years; registered only when nova has not.
nova_default_opts = [
    cfg.ListOpt('img_handlers',
                default=['fuse2fs', 'guestfs'],
                help="""
Image handlers tried, in order, to mount a guest image for data injection.

Each name is an entry point in the ``nova_ksm_inject.image_handlers``
namespace. A handler that cannot serve an image (no copy-on-write when
``use_cow_images`` is on or the image is qcow2, format not supported,
partition inspection not supported) is skipped with a logged reason; a
handler that fails is logged and the next one is tried.

The default needs no privilege and never hands a tenant's filesystem to
the host kernel: ``fuse2fs`` serves ext2/3/4 (raw and qcow2) in a
sandbox in well under a second, and ``guestfs`` takes what it cannot
(XFS, btrfs, a journal that needs recovery, inspection).

Possible values:

* ``fuse2fs``: ext2/3/4 in userspace (fuse2fs, and qemu-storage-daemon's
  FUSE export for qcow2), sandboxed, no privilege (the default first)
* ``guestfs``: libguestfs appliance: any filesystem, the only handler that
  inspects; slow (an appliance boot per image), no privilege
* ``loop``: host loop device, kernel mount (raw only, no copy-on-write);
  needs root or the privsep daemon: for images you trust
* ``qsd``: qemu-storage-daemon FUSE export + loop + kernel mount
  (copy-on-write without nbd); root or privsep: for images you trust
* ``nbd``: qemu-nbd on /dev/nbdN + kernel mount (needs the nbd kernel
  module); root or privsep: for images you trust
* any handler another package installs under the same namespace

Related options:

* ``use_cow_images``
"""),
    cfg.BoolOpt('use_cow_images',
                default=True,
                help="""
Whether guest disks are copy-on-write overlays of a cached base image.

When enabled, handlers that cannot do copy-on-write (``loop``) are skipped.
qcow2 images always need a copy-on-write handler.

Related options:

* ``img_handlers``
"""),
    cfg.IntOpt('timeout_nbd',
               default=10,
               min=0,
               help="""
Seconds to wait for an nbd device to become connected.

Possible values:

* 0 or more seconds
"""),
    cfg.StrOpt('injected_network_template',
               help="""
Jinja2 template rendered into the guest's network configuration.

When unset, the built-in Debian/Ubuntu ``/etc/network/interfaces`` template
of this package is used. The template receives ``interfaces``: a list of
dicts with ``name``, ``address``, ``netmask``, ``gateway``, ``broadcast``,
``dns`` and ``use_dhcp``.
"""),
    cfg.StrOpt('instances_path',
               default='/var/lib/nova/instances',
               help="""
Where nova keeps instance disks; ``$instances_path/_base`` is its image
cache, the default trusted backing directory.
"""),
]

inject_group = cfg.OptGroup(
    'inject',
    title='Image data injection',
    help='Options of nova-ksm-inject for mounting and writing guest images.')

inject_opts = [
    cfg.ListOpt('trusted_backing_dirs',
                default=['$instances_path/_base'],
                help="""
Directories a qcow2 backing file may live in.

A qcow2 image whose backing chain (at any depth) leaves these directories,
or that has an external data file, is refused before any handler opens it.

Related options:

* ``instances_path``
"""),
    cfg.ListOpt('image_dirs',
                default=['$instances_path'],
                help="""
Directories whose images an unprivileged caller may have injected.

The privileged side (the privsep daemon) writes only into images inside
these directories, reached without symlinks below them: nova-compute asks
for instance disks, and nothing else. A root caller (the command run as
root) is not confined.

Related options:

* ``instances_path``
"""),
    cfg.ListOpt('allowed_filesystems',
                default=['ext2', 'ext3', 'ext4', 'xfs', 'btrfs'],
                help="""
Filesystem types the host kernel may mount from a guest image.

The type is read from the superblock by nova-ksm-inject and passed to
``mount -t``; the kernel never guesses it. Any other type is refused by
the host-kernel handlers (``loop``, ``qsd``, ``nbd``), which name it, and
the chain moves on (``guestfs`` parses the filesystem inside an appliance
instead). Every filesystem driver the host kernel runs on tenant data is
attack surface: add a type only if you trust its driver.

Possible values:

* ``ext2``, ``ext3``, ``ext4``, ``xfs``, ``btrfs`` (the Linux root
  filesystems, the default), and other names of ``/proc/filesystems``
  that ``nova_ksm_inject/disk/fstype.py`` recognises (``vfat``,
  ``squashfs``, ``iso9660``...)

Related options:

* ``img_handlers``
"""),
    cfg.StrOpt('state_dir',
               default='/run/nova-ksm-inject/inject',
               help="""
Where injections in progress keep their journals, mountpoints and FUSE
exports, so that ``nova-ksm-inject cleanup`` can undo what a killed
process left behind.

Created mode 0700 and owned by root; an existing directory owned by
anyone else is refused. Nothing of an injection goes under /tmp, where
other host users could read or pin a mounted guest filesystem.
"""),
    cfg.StrOpt('user_state_dir',
               help="""
The state directory of a caller that is not root (nova-compute's user):
journals, work directories and FUSE mountpoints of the handlers that run
in its own process (``fuse2fs``, ``guestfs``).

Created mode 0700, owned by that user; an existing directory owned by
anyone else is refused. When unset, ``/var/tmp/nova-ksm-inject-<uid>``.
``nova-ksm-inject cleanup`` run as that user sweeps it.

Related options:

* ``state_dir`` (root's, and the privsep daemon's)
"""),
    cfg.StrOpt('helper_user',
               default='nobody',
               help="""
The user a root caller runs a read-only helper as (``qemu-img info``)
when the image belongs to root.

Helpers that parse a tenant's bytes never run as root: they run as the
caller when it is not root, else as the image's owner, else (root's own
image, read only) as this user. Helpers that write (qemu-storage-daemon,
fuse2fs) refuse an image that belongs to root.

Related options:

* ``helper_cpu_time``, ``helper_address_space``
"""),
    cfg.StrOpt('root_helper',
               default='sudo nova-rootwrap /etc/nova/rootwrap.conf',
               help="""
Command prefix that starts ``nova-ksm-inject-privsep-helper`` as root
when the command line runs as another user and needs a privileged
handler (``loop``, ``qsd``, ``nbd``) or changes KSM.

The default handlers (``fuse2fs``, ``guestfs``) never use it. nova-compute
uses its own (``[DEFAULT] rootwrap_config``). A context's
``helper_command`` (``[privsep_inject]``, ``[privsep_ksm]``), when set,
replaces the whole command, e.g. ``sudo nova-ksm-inject-privsep-helper``.
Ignored when the process is already root.
"""),
    cfg.IntOpt('qemu_img_cpu_time',
               default=30,
               min=1,
               help="CPU seconds allowed to one ``qemu-img info`` run "
                    "(CVE-2015-5162)."),
    cfg.IntOpt('qemu_img_address_space',
               default=1024 * 1024 * 1024,
               min=64 * 1024 * 1024,
               help="Address space in bytes allowed to one ``qemu-img info`` "
                    "run (CVE-2015-5162)."),
    cfg.IntOpt('helper_cpu_time',
               default=60,
               min=1,
               help="""
CPU seconds allowed to one ``qemu-storage-daemon`` or ``qemu-nbd`` while
it serves an image for injection.

Past it the kernel kills it (RLIMIT_CPU), as ``qemu_img_cpu_time`` does
for ``qemu-img info`` (CVE-2015-5162): a crafted image cannot keep a
root daemon spinning. An injection needs well under a second.

Related options:

* ``helper_address_space``, ``qemu_img_cpu_time``
"""),
    cfg.IntOpt('helper_address_space',
               default=2 * 1024 ** 3,
               min=256 * 1024 ** 2,
               help="""
Address space in bytes allowed to ``qemu-storage-daemon`` and
``qemu-nbd`` (RLIMIT_AS).

They map about 600 MiB of thread stacks and caches while serving an
export; a crafted image cannot make them grow past this.

Related options:

* ``helper_cpu_time``, ``qemu_img_address_space``
"""),
    cfg.IntOpt('max_backing_chain',
               default=16,
               min=1,
               help="Longest qcow2 backing chain accepted."),
    cfg.IntOpt('max_injected_files',
               default=5,
               min=0,
               help="Most files one injection may write (nova's quota "
                    "default)."),
    cfg.IntOpt('max_injected_file_bytes',
               default=10240,
               min=0,
               help="Largest injected file content, in bytes."),
    cfg.IntOpt('max_injected_file_path_length',
               default=255,
               min=1,
               help="Longest injected guest path, in characters."),
    cfg.IntOpt('device_timeout',
               default=10,
               min=1,
               help="Seconds to wait for a loop partition or FUSE export to "
                    "appear."),
]


def register_opts(conf):
    base.register_missing(conf, nova_default_opts)
    conf.register_group(inject_group)
    conf.register_opts(inject_opts, group=inject_group)


def list_opts():
    return {'DEFAULT': nova_default_opts, inject_group: inject_opts}
