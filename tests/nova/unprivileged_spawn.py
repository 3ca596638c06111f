"""spawn() in a process that is not root (run by test_unprivileged.py).

Not a test module: the root test suite runs it as the user
``nova-ksm-test`` with ``python -m tests.nova.unprivileged_spawn CONF
INSTANCES STATE``. nova's own privileged helpers run in this process
(nova's PrivsepFixture, as in every nova driver test); ours go through a
real privsep daemon started by ``helper_command`` (sudo privsep-helper),
which reads CONF, a root-owned nova.conf. The parent reads the disk back
with debugfs.
"""

# nova's unit-test fixtures run on eventlet: patch first, as nova's own
# test package does, because oslo.privsep decides at import whether to use
# green I/O, and a blocking read of the helper's output would stall every
# green thread (nova-compute itself runs with native threads).
from nova import monkey_patch

monkey_patch.patch()

import sys  # noqa: E402
import unittest  # noqa: E402

import fixtures  # noqa: E402
from oslo_privsep import daemon as privsep_daemon  # noqa: E402

from tests.nova import base  # noqa: E402
from tests.nova import test_spawn  # noqa: E402

CONF_FILE, INSTANCES, STATE = sys.argv[1:4]
# nova's test base forbids starting privsep helpers (it replaces this class
# with one that raises); starting a real one is the point here.
REAL_CHANNEL = privsep_daemon.RootwrapClientChannel


class UnprivilegedSpawn(test_spawn.SpawnTestCase):

    def setUp(self):
        # Not root on purpose: the injection must cross to the daemon.
        base.require_root = lambda testcase: None
        super().setUp()
        # After nova's options (as in nova-compute): registers
        # [privsep_inject].
        from nova_ksm_inject.privsep import contexts  # noqa: F401
        self.useFixture(fixtures.MonkeyPatch(
            'oslo_privsep.daemon.RootwrapClientChannel', REAL_CHANNEL))
        self.flags(instances_path=INSTANCES)
        self.flags(state_dir=STATE, group='inject')
        # Our helper, which reads root's fixed list of configuration files
        # (the test's Site.write_conf pointed it at CONF_FILE).
        helper = 'sudo %s/nova-ksm-inject-privsep-helper' % sys.argv[4]
        self.flags(helper_command=helper, group='privsep_inject')

    def disk_of(self, instance):
        return '%s/%s/disk' % (INSTANCES, instance.uuid)

    def test_spawn_injects_through_the_privsep_daemon(self):
        image_id = self.upload(base.build_guest_image(self.tmp))
        instance = self.make_instance(image_id)
        self.spawn(instance, image_id,
                   files=[('/etc/motd', test_spawn.MOTD)])
        print('DISK %s' % self.disk_of(instance))
        log = self.logged()
        self.assertIn('with handler loop', log)
        self.assertNotIn(test_spawn.PASSWORD, log)


if __name__ == '__main__':
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(
        UnprivilegedSpawn)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(
        suite)
    sys.exit(0 if result.wasSuccessful() and result.testsRun == 1 else 1)
