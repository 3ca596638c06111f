"""nova's injection rules through spawn(): files mandatory, the rest
best-effort, nothing for a volume-backed guest, and copy-on-write disks
injected through the chain without touching nova's image cache."""

import hashlib
import os

from nova import exception as nova_exception
from nova import objects
from nova.virt import fake
from nova.virt.libvirt import blockinfo
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ksm_inject import exception
from nova_ksm_inject.virt.libvirt import driver
from tests.nova import base
from tests.nova import test_spawn

KEY, MOTD = test_spawn.KEY, test_spawn.MOTD


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class TestBestEffort(test_spawn.SpawnTestCase):

    def test_guest_without_shadow_gets_the_rest_and_boots(self):
        image_id = self.upload(base.build_guest_image(self.tmp, shadow=False))
        instance = self.make_instance(image_id)
        self.spawn(instance, image_id, files=[('/etc/motd', MOTD)])

        disk = self.disk_of(instance)
        self.assertIn(KEY.encode(),
                      base.debugfs_cat(disk, '/root/.ssh/authorized_keys'))
        self.assertEqual(MOTD, base.debugfs_cat(disk, '/etc/motd'))
        self.assertFalse(base.debugfs_exists(disk, '/etc/shadow'))
        self.assertIn('Ignoring error injecting admin_password into image %s'
                      % image_id, self.logged())
        self.assert_nothing_left(disk)

    def test_unmountable_disk_with_files_fails_the_spawn(self):
        # Partition 1 of a disk that has no partition table.
        self.flags(inject_partition=1, group='libvirt')
        image_id = self.upload(base.build_guest_image(self.tmp))
        instance = self.make_instance(image_id)
        # Every host would fail alike: nova's build abort (no reschedule),
        # the cause on one line in the fault.
        err = self.assertRaises(nova_exception.BuildAbortException,
                                self.spawn, instance, image_id,
                                [('/etc/motd', MOTD)])
        self.assertIsInstance(err.__cause__, exception.NoHandlerMounted)
        self.assertIn('cannot inject into image %s: No image handler could '
                      'mount' % image_id, str(err))
        self.assertNotIn('\n', str(err))
        self.assertIn('Error injecting data into image %s' % image_id,
                      self.logged())
        self.assert_nothing_left(self.disk_of(instance))

    def test_unmountable_disk_without_files_boots_untouched(self):
        self.flags(inject_partition=1, group='libvirt')
        image = base.build_guest_image(self.tmp)
        original = _sha256(image)
        image_id = self.upload(image)
        instance = self.make_instance(image_id)
        self.spawn(instance, image_id)

        self.assertEqual(original, _sha256(self.disk_of(instance)))
        self.assertIn('Ignoring error injecting data into image %s'
                      % image_id, self.logged())


class TestNoLocalRoot(test_spawn.SpawnTestCase):

    def test_volume_backed_guest_gets_nothing_injected(self):
        # nova's own decision, made in its _create_and_inject_local_root
        # before it would call the injection this package replaces.
        calls = []
        self.stub_out('nova_ksm_inject.disk.api.inject_data',
                      lambda *a, **kw: calls.append(a))
        instance = self.make_instance(uuids.any_image)
        disk_info = blockinfo.get_disk_info(
            'kvm', instance, objects.ImageMeta.from_dict({}))
        self.drvr._create_and_inject_local_root(
            self.context, instance, disk_info['mapping'], True, '',
            {'image_id': uuids.any_image},
            driver.libvirt_driver.InjectionInfo(
                network_info=[], files=[('/etc/motd', MOTD)],
                admin_pass=test_spawn.PASSWORD), None)
        self.assertEqual([], calls)
        self.assertIn('File injection into a boot from volume instance is '
                      'not supported', self.logged())


class TestCopyOnWrite(test_spawn.SpawnTestCase):

    def setUp(self):
        super().setUp()
        # nova's default: qcow2 overlays on a raw cached base image.
        self.flags(use_cow_images=True, img_handlers=['loop', 'fuse2fs'])
        base.disks_owned_by_nova(self)
        # The image backend is chosen when the driver is built.
        self.drvr = driver.LibvirtDriver(fake.FakeVirtAPI(), False)

    def test_qcow2_overlay_is_injected_and_the_cache_is_untouched(self):
        image_id = self.upload(base.build_guest_image(self.tmp))
        instance = self.make_instance(image_id)
        self.spawn(instance, image_id, files=[('/etc/motd', MOTD)])

        disk = self.disk_of(instance)
        overlay = base.run('qemu-img', 'info', '-f', 'qcow2', disk)
        self.assertIn(b'backing file:', overlay)
        cached = [os.path.join(self.tmp, 'instances', '_base', name)
                  for name in os.listdir(os.path.join(self.tmp, 'instances',
                                                      '_base'))]
        self.assertEqual(1, len(cached), cached)
        self.assertFalse(base.debugfs_exists(cached[0], '/etc/motd'))

        flat = os.path.join(self.tmp, 'flat.raw')
        base.run('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', disk,
                 flat)
        self.assertEqual(MOTD, base.debugfs_cat(flat, '/etc/motd'))
        self.assertIn(KEY.encode(),
                      base.debugfs_cat(flat, '/root/.ssh/authorized_keys'))
        log = self.logged()
        self.assertIn('Skipping image handler loop', log)
        self.assertIn('with handler fuse2fs', log)
        self.assert_nothing_left(disk)


class TestUnsupportedBackend(test_spawn.SpawnTestCase):

    def test_non_file_disk_is_a_setup_failure(self):
        class BlockDisk(object):
            path = '/dev/vg/instance_disk'

            def get_model(self, connection):
                return driver.imgmodel.LocalBlockImage(self.path)

        instance = self.make_instance(uuids.any_image)
        info = driver.libvirt_driver.InjectionInfo(
            network_info=[], files=[('/etc/motd', MOTD)], admin_pass=None)
        err = self.assertRaises(nova_exception.BuildAbortException,
                                self.drvr._inject_data, BlockDisk(),
                                instance, info)
        self.assertIsInstance(err.__cause__, exception.ImageRefused)
        self.assertIn('local raw or qcow2 files only', str(err))
        # Without files nova's rule makes it a warning.
        self.drvr._inject_data(BlockDisk(), instance, info._replace(files=[]))
        self.assertIn('Ignoring error injecting data', self.logged())
