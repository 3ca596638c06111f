"""``ksm:merge``/``ksm_merge`` values that are not booleans, against real
nova: nova-api's validator and the driver accept the same spellings, and
the driver refuses the others before nova's spawn or resize starts."""

import os

from nova import exception as nova_exception
from nova import objects
from nova.api.validation.extra_specs import validators
from nova.compute import power_state

from tests.nova import base
from tests.nova import test_spawn
from tests.unit.api import test_extra_specs

MESSAGE = ("ksm:merge='maybe' in flavor lab.maybe is not a boolean; use true "
           "or false (also accepted, in any case: 1/0, t/f, on/off, y/n, "
           "yes/no)")


class TestSameValuesAsNovaApi(base.DriverTestCase):

    def test_nova_api_validator_accepts_exactly_what_the_driver_does(self):
        # nova-api's own lookup of the ``ksm`` namespace (our entry point)
        # and its bool type.
        test_extra_specs.assert_accepts_what_the_driver_does(
            lambda value: validators.validate('ksm:merge', value),
            nova_exception.ValidationError)

def _flavor(name, value):
    return objects.Flavor(
        id=2, name=name, memory_mb=256, vcpus=1, root_gb=0, ephemeral_gb=0,
        swap=0, flavorid=name, rxtx_factor=1.0, vcpu_weight=None,
        disabled=False, is_public=True, extra_specs={'ksm:merge': value},
        projects=[])


class TestDriverRefuses(test_spawn.SpawnTestCase):

    def setUp(self):
        super().setUp()
        self.image_id = self.upload(base.build_guest_image(self.tmp))

    def test_spawn_aborts_before_nova_creates_anything(self):
        instance = self.make_instance(self.image_id,
                                      flavor=_flavor('lab.maybe', 'maybe'))
        err = self.assertRaises(nova_exception.BuildAbortException,
                                self.spawn, instance, self.image_id,
                                [('/etc/motd', test_spawn.MOTD)])
        self.assertEqual('Build of instance %s aborted: %s'
                         % (instance.uuid, MESSAGE), err.format_message())
        # No instance directory, no image cache, no injection.
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'instances')))
        self.assertNotIn('Injecting', self.logged())

    def test_image_property_from_system_metadata_aborts_the_spawn(self):
        instance = self.make_instance(self.image_id)
        instance.system_metadata['image_ksm_merge'] = 'sometimes'
        err = self.assertRaises(nova_exception.BuildAbortException,
                                self.spawn, instance, self.image_id)
        self.assertIn("ksm_merge='sometimes' in image %s is not a boolean"
                      % self.image_id, err.format_message())
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'instances')))

    def test_resize_to_such_a_flavor_is_rolled_back_guest_running(self):
        instance = self.make_instance(self.image_id)
        self.spawn(instance, self.image_id)
        err = self.assertRaises(
            nova_exception.InstanceFaultRollback,
            self.drvr.migrate_disk_and_power_off, self.context, instance,
            'compute2', _flavor('lab.maybe', 'maybe'), [])
        self.assertIsInstance(err.inner_exception, nova_exception.ResizeError)
        self.assertEqual('Resize error: ' + MESSAGE,
                         err.inner_exception.format_message())
        self.assertEqual(power_state.RUNNING,
                         self.drvr.get_info(instance).state)
        self.assertTrue(os.path.exists(self.disk_of(instance)))
