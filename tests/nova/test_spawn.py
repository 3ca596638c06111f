"""spawn() through nova's real libvirt driver code, on nova's fake libvirt,
with a real guest image fetched from nova's fake glance into a real
instance directory: injection must land in the disk file, read back with
debugfs, or not happen at all where nova's rules say so."""

import os
import tempfile

import fixtures
from nova import context as nova_context
from nova import objects
from nova.compute import power_state
from nova.network import model as network_model
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import fake_instance
from nova.tests.unit import fake_network
from nova.virt import fake
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ksm_inject.virt.libvirt import driver
from tests.nova import base

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK5lab1student lab@course'
PASSWORD = 'Lab-1-s3cret'
MOTD = b'Welcome to lab 1\n'


class SpawnTestCase(base.DriverTestCase):
    """A compute node configured for injection with the loop handler."""

    def setUp(self):
        super().setUp()
        base.require_root(self)
        # nova's privileged helpers (utime, copy) run in this process, which
        # is root: what nova's privsep daemon would do for nova-compute.
        self.useFixture(nova_fixtures.PrivsepFixture())
        self.context = nova_context.get_admin_context()
        self.glance = self.useFixture(nova_fixtures.GlanceFixture(self))
        self.flags(use_cow_images=False, img_handlers=['loop'])
        self.flags(state_dir=os.path.join(self.tmp, 'inject-state'),
                   group='inject')
        self.flags(inject_partition=0, inject_key=True,
                   inject_password=True, group='libvirt')
        # Device tags and the post-spawn instance record live in nova's
        # database, which these tests do not run; nova's own spawn tests
        # stub the same two methods.
        for method in ('_build_device_metadata',
                       '_register_undefined_instance_details'):
            self.stub_out('nova.virt.libvirt.driver.LibvirtDriver.' + method,
                          lambda *a, **kw: None)
        self.drvr = driver.LibvirtDriver(fake.FakeVirtAPI(), False)

    def upload(self, image_path, disk_format='raw'):
        with open(image_path, 'rb') as f:
            meta = self.glance.create(self.context, {
                'id': uuids.lab_image, 'name': 'lab1',
                'disk_format': disk_format, 'container_format': 'bare',
                'size': os.path.getsize(image_path)}, data=f)
        return meta['id']

    def make_instance(self, image_id, **updates):
        flavor = objects.Flavor(
            id=1, name='lab.small', memory_mb=256, vcpus=1, root_gb=0,
            ephemeral_gb=0, swap=0, flavorid='1', rxtx_factor=1.0,
            vcpu_weight=None, disabled=False, is_public=True, extra_specs={},
            projects=[])
        fields = dict(uuid=uuids.instance, image_ref=image_id,
                      key_data=KEY, config_drive='', kernel_id='',
                      ramdisk_id='', os_type='linux', host='compute1',
                      node='compute1', flavor=flavor)
        fields.update(updates)
        instance = fake_instance.fake_instance_obj(self.context, **fields)
        # Loaded with the instance in nova-compute; set, not lazy-loaded.
        instance.metadata = {'course': 'lab1'}
        instance.system_metadata = {'image_disk_format': 'raw'}
        instance.trusted_certs = None
        instance.numa_topology = None
        instance.pci_devices = objects.PciDeviceList()
        instance.vcpu_model = None
        instance.info_cache = objects.InstanceInfoCache(
            instance_uuid=instance.uuid,
            network_info=network_model.NetworkInfo())
        return instance

    def spawn(self, instance, image_id, files=(), password=PASSWORD,
              network_info=None):
        image_meta = objects.ImageMeta.from_dict(
            {'id': image_id, 'disk_format': 'raw',
             'container_format': 'bare'})
        self.drvr.spawn(self.context, instance, image_meta, list(files),
                        password, {},
                        network_info=network_info or
                        network_model.NetworkInfo())

    def disk_of(self, instance):
        return os.path.join(self.tmp, 'instances', instance.uuid, 'disk')

    def assert_nothing_left(self, disk):
        self.assertEqual([], base.loops_backing(disk))
        self.assertEqual([], base.mounts_under(tempfile.gettempdir()))


class TestSpawnInjects(SpawnTestCase):

    def test_key_password_metadata_and_file_land_in_the_disk(self):
        image_id = self.upload(base.build_guest_image(self.tmp))
        instance = self.make_instance(image_id)
        self.spawn(instance, image_id, files=[('/etc/motd', MOTD)])

        disk = self.disk_of(instance)
        keys = base.debugfs_cat(disk, '/root/.ssh/authorized_keys')
        self.assertIn(KEY.encode(), keys)
        root = base.debugfs_cat(disk, '/etc/shadow').split(b'\n')[0]
        hashed = root.split(b':')[1].decode()
        self.assertTrue(hashed.startswith('$6$'), root)
        self.assertTrue(base.verify_sha512_crypt(PASSWORD, hashed))
        self.assertIn(b'lab:!:', base.debugfs_cat(disk, '/etc/shadow'))
        self.assertEqual(MOTD, base.debugfs_cat(disk, '/etc/motd'))
        self.assertIn(b'"course": "lab1"', base.debugfs_cat(disk, '/meta.js'))

        # nova went on to define and start the guest on (fake) libvirt.
        self.assertEqual(power_state.RUNNING,
                         self.drvr.get_info(instance).state)
        log = self.logged()
        self.assertIn('Injecting key, metadata, admin_password, 1 file into '
                      'image %s' % image_id, log)
        self.assertIn('with handler loop', log)
        self.assertNotIn(PASSWORD, log)
        self.assert_nothing_left(disk)

    def test_inject_key_and_password_off_inject_only_the_rest(self):
        self.flags(inject_key=False, inject_password=False, group='libvirt')
        image_id = self.upload(base.build_guest_image(self.tmp))
        instance = self.make_instance(image_id)
        self.spawn(instance, image_id)

        disk = self.disk_of(instance)
        self.assertFalse(base.debugfs_exists(disk, '/root/.ssh'))
        self.assertIn(b'root:*:', base.debugfs_cat(disk, '/etc/shadow'))
        self.assertTrue(base.debugfs_exists(disk, '/meta.js'))
        self.assertIn('Injecting metadata into image %s' % image_id,
                      self.logged())


    def test_static_network_rendered_by_nova_template(self):
        network_info = fake_network.fake_get_instance_nw_info(self)
        for vif in network_info:
            vif['network']['meta']['injected'] = True
        image_id = self.upload(base.build_guest_image(self.tmp))
        instance = self.make_instance(image_id)
        self.spawn(instance, image_id, network_info=network_info)

        interfaces = base.debugfs_cat(self.disk_of(instance),
                                      '/etc/network/interfaces')
        self.assertIn(b'# Injected by Nova on instance boot', interfaces)
        self.assertIn(b'address 192.168.1.100', interfaces)
        self.assertIn(b'gateway 192.168.1.1', interfaces)
        self.assertIn('Injecting key, net, metadata, admin_password into '
                      'image %s' % image_id, self.logged())


class TestSpawnInjectsNothing(SpawnTestCase):
    """nova's rules decide whether injection happens at all.

    Each test first spawns a control guest that nova's rules allow to be
    injected, and sees the handler chain write into its disk: so a rule
    that stops injection is seen stopping *this* driver's injection, not
    merely nova's (without the driver's ``_inject_data`` the control
    fails).
    """

    def setUp(self):
        super().setUp()
        self.image_id = self.upload(base.build_guest_image(self.tmp))

    def _spawn(self, name, **updates):
        instance = self.make_instance(self.image_id,
                                      uuid=getattr(uuids, name), **updates)
        self.spawn(instance, self.image_id, files=[('/etc/motd', MOTD)])
        return self.disk_of(instance)

    def assert_control_injected(self):
        disk = self._spawn('control')
        self.assertEqual(MOTD, base.debugfs_cat(disk, '/etc/motd'))
        self.assertIn('into %s with handler loop' % disk, self.logged())

    def assert_untouched(self, disk):
        with open(os.path.join(self.tmp, 'instances', '_base',
                               os.listdir(os.path.join(
                                   self.tmp, 'instances', '_base'))[0]),
                  'rb') as f:
            original = f.read()
        with open(disk, 'rb') as f:
            self.assertEqual(original, f.read())
        self.assertFalse(base.debugfs_exists(disk, '/etc/motd'))
        self.assertEqual([], [line for line in self.logged().splitlines()
                              if 'nova_ksm_inject' in line and disk in line])

    def test_config_drive_spawn_injects_nothing(self):
        self.assert_control_injected()
        # What goes into the config drive is nova's metadata API and
        # genisoimage, not this test's business; nova's own config drive
        # spawn test replaces the same two.
        self.useFixture(fixtures.MockPatch(
            'nova.api.metadata.base.InstanceMetadata'))
        self.useFixture(fixtures.MockPatch(
            'nova.virt.configdrive.ConfigDriveBuilder._make_iso9660',
            side_effect=_fake_iso))
        disk = self._spawn('with_config_drive', config_drive='True')
        self.assert_untouched(disk)
        self.assertIn('Using config drive', self.logged())
        self.assertTrue(os.path.exists(os.path.join(
            os.path.dirname(disk), 'disk.config')))

    def test_inject_partition_minus_two_disables_injection(self):
        self.assert_control_injected()
        self.flags(inject_partition=-2, group='libvirt')
        self.assert_untouched(self._spawn('with_minus_two'))


def _fake_iso(path, tmpdir):
    with open(path, 'wb') as f:
        f.write(b'config drive')
