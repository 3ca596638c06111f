"""The host implementation on hostile images, through the loop handler.

Every scenario of :mod:`.hostile` is injected through the whole chain
(``api.inject_data``, handler ``loop``, HostRootFiles on a host-kernel
mount) and read back with debugfs. Loop mounts take milliseconds: one
image per scenario.
"""

from oslo_config import fixture as config_fixture
import pytest

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import api
from tests.functional import conftest as base
from tests.functional.disk.files import hostile


@pytest.fixture(scope='module')
def injected(tmp_path_factory):
    top = str(tmp_path_factory.mktemp('hostile-host'))
    conf = config_fixture.Config(CONF)
    conf.setUp()
    conf.config(group='inject', state_dir=top + '/state')

    def through_loop(scenario, image):
        return api.inject_data(image, scenario.request, partition=0,
                               handler_names=['loop'], use_cow=False).items
    try:
        yield hostile.run_all(top, through_loop)
    finally:
        conf.cleanUp()
    leaked = (base.loop_devices(top) + base.mounts(top) +
              base.journal_leftovers(top + '/state'))
    assert not leaked, 'leaked: %s' % leaked


class TestHostRootFiles(hostile.HostileChecks):
    pass
