"""The appliance implementation on hostile images, in a real libguestfs
appliance (TCG).

The confinement of symlinks and ``..`` is the appliance's own (its daemon
resolves paths chrooted into the guest): only a real appliance can show
it. An appliance launch costs 15-25 s here, so there is one for the whole
module: every scenario of :mod:`.hostile` is a drive of it, mounted at
``/`` in turn and written through GuestfsFiles and ``inject_data``. The
handler's own mounting is tested in tests/functional/disk/test_guestfs.py.
Images are read with debugfs after the appliance has shut down.
"""

import pytest

from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk.files import appliance
from nova_ksm_inject.disk.handlers import guestfs
from tests.functional.conftest import qemu_processes
from tests.functional.disk.files import hostile

pytestmark = pytest.mark.skipif(
    guestfs.load_binding() is None,
    reason='the libguestfs Python binding (Debian python3-guestfs) is not '
           'importable; run tools/link-guestfs for this venv')


def _launch(images):
    handle = guestfs.load_binding().GuestFS(python_return_dict=True)
    # KVM here aborts qemu: the appliance must run under TCG.
    handle.set_backend('direct')
    handle.set_backend_settings(['force_tcg'])
    for image in images:
        handle.add_drive_opts(image, format='raw', readonly=False)
    handle.launch()
    return handle


@pytest.fixture(scope='module')
def injected(tmp_path_factory):
    top = str(tmp_path_factory.mktemp('hostile-appliance'))
    images = {s.name: hostile.build(top, s) for s in hostile.SCENARIOS}
    handle = _launch(list(images.values()))
    devices = dict(zip(images, handle.list_devices(), strict=True))

    def in_appliance(scenario, _image):
        handle.mount(devices[scenario.name], '/')
        try:
            return inject.inject_data(appliance.GuestfsFiles(handle),
                                      scenario.request,
                                      image_desc=scenario.name)
        finally:
            handle.umount('/')
    try:
        outcomes = hostile.run_all(top, in_appliance, images)
    finally:
        handle.shutdown()
        handle.close()
    yield outcomes
    assert not [p for p in qemu_processes() if top in p]


class TestGuestfsFiles(hostile.HostileChecks):
    pass
