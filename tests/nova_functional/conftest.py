"""nova's functional harness (``tox -e nova-functional``).

nova-compute (nova 2025.2+) runs on native threads by default: so do these
tests (tox sets OS_NOVA_DISABLE_EVENTLET_PATCHING=1).
``nova.tests.functional`` applies nova's own process setup exactly as
nova's functional tests get it, and nova's options are registered before
ours, as in nova-compute and nova-api.
"""

import os

os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')

import nova.tests.functional  # noqa: E402,F401,I001
from nova import objects  # noqa: E402
import nova.conf  # noqa: E402,F401

from tests import host_check  # noqa: E402

objects.register_all()


def pytest_sessionstart(session):
    # nova's qcow2 backend, the default handlers, config drives.
    host_check.require('nova-functional', ('qemu-img', 'qemu-storage-daemon',
                                           'fuse2fs', 'bwrap', 'guestfish',
                                           'isoinfo'))
