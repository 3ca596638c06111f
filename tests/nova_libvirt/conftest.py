"""nova on the real hypervisor (``tox -e nova-libvirt``).

nova's own process setup, as in ``tests/nova_functional``, minus the
poisons nova's test base lays over the host: they keep unit and
functional tests off libvirt, /sys, ``os.uname`` and the libvirt event
thread, and this tier is about exactly those. They are replaced in this
process only (its own pytest run), before any test case starts.
"""

import os

os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')

import fixtures  # noqa: E402,I001
import nova.tests.functional  # noqa: E402,F401
from nova import objects  # noqa: E402
import nova.conf  # noqa: E402,F401
from nova.tests import fixtures as nova_fixtures  # noqa: E402

from tests import host_check  # noqa: E402

objects.register_all()

#: nova's fixtures that forbid the real host; here they do nothing.
HOST_POISONS = ('GenericPoisonFixture', 'SysFsPoisonFixture',
                'ImportModulePoisonFixture', 'PoisonFunctions')


class _Allowed(fixtures.Fixture):
    def __init__(self, *args, **kwargs):
        super().__init__()


for _name in HOST_POISONS:
    setattr(nova_fixtures, _name, _Allowed)


def pytest_sessionstart(session):
    host_check.require('nova-libvirt', (
        'qemu-img', 'qemu-storage-daemon', 'fuse2fs', 'bwrap', 'guestfish',
        'qemu-system-x86_64', 'virsh', 'libvirtd', 'debootstrap'),
        libvirtd=True)
