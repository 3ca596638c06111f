"""The host implementation on hostile images, through the loop handler.

Every scenario of :mod:`.hostile` is injected through the whole chain
(``api.inject_data``, handler ``loop``, HostRootFiles on a host-kernel
mount) and read back with debugfs. Loop mounts take milliseconds: one
image per scenario.

A regression here would run as root on the machine's own files, so no link
may name them: absolute links name a decoy directory that exists on the
host too (and must stay as it was), and the mount point lies deep enough
in the test's directory that relative links and ``..`` climbing out of
the guest still land inside it.
"""

import os

from oslo_config import fixture as config_fixture
import pytest

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import api
from tests.functional import conftest as base
from tests.functional.disk.files import hostile
from tests.functional.disk.test_hostile import snapshot


@pytest.fixture(scope='module')
def decoy(tmp_path_factory):
    """A host directory absolute links in the images name; its snapshot."""
    path = str(tmp_path_factory.mktemp('decoy'))
    base.build_tree(path)
    return path, snapshot(path)


@pytest.fixture(scope='module')
def injected(tmp_path_factory, decoy):
    top = str(tmp_path_factory.mktemp('hostile-host'))
    state = os.path.join(top, *'1234567', 'state')
    conf = config_fixture.Config(CONF)
    conf.setUp()
    conf.config(group='inject', state_dir=state)

    def through_loop(scenario, image):
        return api.inject_data(image, scenario.request, partition=0,
                               handler_names=['loop'], use_cow=False).items
    try:
        yield hostile.run_all(top, through_loop, decoy=decoy[0])
    finally:
        conf.cleanUp()
    leaked = (base.loop_devices(top) + base.mounts(top) +
              base.journal_leftovers(state))
    assert not leaked, 'leaked: %s' % leaked


class TestHostRootFiles(hostile.HostileChecks):

    def test_host_decoy_untouched(self, injected, decoy):
        assert snapshot(decoy[0]) == decoy[1]
