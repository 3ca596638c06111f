"""The image handler contract.

An image handler makes a guest image's filesystem reachable for injection
and undoes that afterwards. Handlers are stevedore plugins in the namespace
``nova_ksm_inject.image_handlers``; another package adds one with an entry
point and a subclass of :class:`ImageHandler`.

The chain (``disk/chain.py``) asks each handler, in the configured order:

1. :meth:`ImageHandler.skip_reason` -- can it serve this image at all
   (copy-on-write, format, partition inspection)? Cheap, no side effects.
2. :meth:`ImageHandler.mount` -- attach and mount, registering every
   resource it creates on the journal *as soon as it exists*, so the chain
   can unwind it in reverse whatever happens next.

A handler signals "not on this host" with HandlerUnavailable and "tried and
failed" with HandlerFailed; both let the chain move on to the next handler.
"""

import abc

from nova_ksm_inject import exception

# Partition values, nova's meanings ([libvirt] inject_partition).
PARTITION_DISABLED = -2
PARTITION_INSPECT = -1
PARTITION_WHOLE_DISK = 0


class ImageHandler(metaclass=abc.ABCMeta):
    """Base class and contract of an image handler.

    Class attributes declare what the handler can do; the chain reads them
    to skip a handler before touching anything.
    """

    #: Entry-point name, set by the chain when loaded through stevedore.
    name = None
    #: True when writes can land in a copy-on-write overlay (qcow2) rather
    #: than needing a plain raw file.
    cow = False
    #: Image formats this handler opens (always passed explicitly to tools).
    formats = frozenset(['raw'])
    #: True when the handler can find the root filesystem itself
    #: (partition -1, "inspect").
    can_inspect = False
    #: True when the host kernel parses the guest filesystem (mount);
    #: False when it is parsed elsewhere (an appliance, a FUSE server).
    kernel_mount = True
    #: True when the handler needs root (loop devices, kernel mounts): an
    #: unprivileged caller reaches it through the privsep daemon. False
    #: when it runs in the caller's own process, whoever that is.
    privileged = True

    def __init__(self, conf):
        self.conf = conf

    def skip_reason(self, image, partition, need_cow):
        """Why this handler cannot serve ``image``, or None if it can.

        :param image: :class:`nova_ksm_inject.disk.image.ImageInfo`.
        :param partition: -1 (inspect), 0 (whole disk) or N.
        :param need_cow: copy-on-write is required (``use_cow_images`` or
            a qcow2 image).
        """
        if need_cow and not self.cow:
            why = ('the image is qcow2' if image.format == 'qcow2'
                   else 'use_cow_images is on')
            return 'cannot do copy-on-write (%s)' % why
        if image.format not in self.formats:
            return 'does not open %s images (only %s)' % (
                image.format, ', '.join(sorted(self.formats)))
        if partition == PARTITION_INSPECT and not self.can_inspect:
            return 'cannot inspect the image for its root partition'
        return None

    @abc.abstractmethod
    def check_host(self):
        """Check this host can run the handler at all; cheap, no changes.

        :raises HandlerUnavailable: with the cause and the fix, e.g. "the
            nbd kernel module is not loaded; run modprobe nbd max_part=16".
        """

    @abc.abstractmethod
    def mount(self, image, partition, journal):
        """Make the guest filesystem of ``image`` writable for injection.

        :param image: :class:`~nova_ksm_inject.disk.image.ImageInfo`; its
            ``format`` must be passed explicitly to every tool.
        :param partition: -1 (inspect; only when ``can_inspect``), 0 (the
            image is the filesystem) or N (partition N).
        :param journal: :class:`~nova_ksm_inject.disk.state.Journal`; push
            every resource (device, mount, process, temp dir) right after
            creating it. The chain unwinds the journal in reverse, on
            success and on any failure, so ``mount`` must not clean up
            itself.
        :returns: a :class:`~nova_ksm_inject.disk.files.base.GuestFiles`
            rooted at the guest's ``/``.
        :raises HandlerUnavailable: the host cannot run this handler.
        :raises HandlerFailed: this image could not be mounted.
        """


def describe_failure(err):
    """One-line reason for a handler failure, for logs and the summary."""
    if isinstance(err, exception.NovaKsmInjectError):
        return str(err)
    return '%s: %s' % (type(err).__name__, err)
