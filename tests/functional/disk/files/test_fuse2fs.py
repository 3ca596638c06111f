"""The hostile images of :mod:`.hostile` through the ``fuse2fs`` handler,
called by root (the helpers run as the images' owner, ``nobody``).

Same checks as ``test_host.py`` (HostRootFiles on a host-kernel mount):
here the guest filesystem is served by fuse2fs in a sandbox, and the
same guest-file rules must hold on it. Absolute links name a decoy
directory that exists on the host too, and must stay as it was.
"""

import os

from oslo_config import fixture as config_fixture
import pytest

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import api
from tests.functional import conftest as base
from tests.functional.disk.files import hostile
from tests.functional.disk.files.test_host import decoy  # noqa: F401
from tests.functional.disk.test_hostile import snapshot


@pytest.fixture(scope='module')
def injected(tmp_path_factory, decoy):  # noqa: F811
    top = str(tmp_path_factory.mktemp('hostile-fuse2fs'))
    state = os.path.join(top, *'1234567', 'state')
    conf = config_fixture.Config(CONF)
    conf.setUp()
    conf.config(group='inject', state_dir=state)

    def through_fuse2fs(scenario, image):
        return api.inject_data(base.Images.give(image), scenario.request,
                               partition=0, handler_names=['fuse2fs'],
                               use_cow=False).items
    try:
        yield hostile.run_all(top, through_fuse2fs, decoy=decoy[0])
    finally:
        conf.cleanUp()
    leaked = (base.mounts(top) + base.journal_leftovers(state) +
              [p for p in base.qemu_processes() if top in p])
    assert not leaked, 'leaked: %s' % leaked


class TestFuse2fsFiles(hostile.HostileChecks):

    def test_host_decoy_untouched(self, injected, decoy):  # noqa: F811
        assert snapshot(decoy[0]) == decoy[1]
