"""``loop``: the image file on a host loop device, mounted by the kernel.

Fastest handler; raw images only and no copy-on-write, so the chain skips
it when ``use_cow_images`` is on or the image is qcow2. A partition is
reached with an offset loop (see ``disk/mount.py``).
"""

from nova_ksm_inject.disk import mount
from nova_ksm_inject.disk.handlers import base


class LoopHandler(base.ImageHandler):
    """Mount a raw image through a loop device."""

    cow = False
    formats = frozenset(['raw'])
    can_inspect = False
    kernel_mount = True

    def check_host(self):
        mount.check_loop_available()

    def mount(self, image, partition, journal):
        return mount.mount_raw_file(image.tool_path, partition, journal,
                                    real_path=image.path)
