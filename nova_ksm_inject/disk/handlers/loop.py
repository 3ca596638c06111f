"""``loop``: the image file on a host loop device, mounted by the kernel.

Fastest handler; raw images only and no copy-on-write, so the chain skips
it when ``use_cow_images`` is on or the image is qcow2. A partition is
reached with an offset loop (see ``disk/mount.py``).
"""

import os
import shutil

from nova_ksm_inject import exception
from nova_ksm_inject.disk import mount
from nova_ksm_inject.disk.handlers import base


class LoopHandler(base.ImageHandler):
    """Mount a raw image through a loop device."""

    cow = False
    formats = frozenset(['raw'])
    can_inspect = False
    kernel_mount = True

    def check_host(self):
        if not shutil.which('losetup'):
            raise exception.HandlerUnavailable(
                reason='losetup not found; install the Debian package mount')
        if not os.path.exists('/dev/loop-control'):
            raise exception.HandlerUnavailable(
                reason='no /dev/loop-control: the loop driver is not '
                       'loaded; run modprobe loop')

    def mount(self, image, partition, journal):
        return mount.mount_raw_file(image.path, partition, journal)
