"""Tests of the compute driver against real nova code (``tox -e nova``).

nova-compute (nova 2025.2+) runs with native threads by default: so do
these tests. ``nova.tests.unit`` applies nova's own process setup (monkey
patching choice, object registry) exactly as nova's unit tests get it, and
nova's options are registered before ours, as in nova-compute.
"""

import os

os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')

import nova.tests.unit  # noqa: E402,F401,I001
import nova.conf  # noqa: E402,F401

from tests import host_check  # noqa: E402


def pytest_sessionstart(session):
    # Real images, the handlers, and the deployed privsep helper (sudo).
    host_check.require('nova', ('qemu-img', 'mkfs.ext4', 'debugfs',
                                'losetup', 'qemu-storage-daemon', 'fuse2fs',
                                'bwrap', 'guestfish', 'sudo', 'runuser'))
