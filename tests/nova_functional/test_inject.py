"""Injection through nova's servers API, into the qcow2 overlay nova's
real image backend creates, read back with debugfs after ACTIVE."""

import base64
import os
import subprocess

from oslo_utils.fixture import uuidsentinel as uuids

from tests.nova import base as nova_base
from tests.nova_functional import base
from tests.nova_functional import images

KEY = ('ssh-ed25519 '
       'AAAAC3NzaC1lZDI1NTE5AAAAINPl9IVmJ+9riY1lT0JR+8Gjccxq8YndyFoXRrCA8Duf '
       'lab@course')
PASSWORD = 'Lab-1-s3cret'
MOTD = 'Welcome to lab 1\n'


def personality(path, text):
    return {'path': path,
            'contents': base64.b64encode(text.encode()).decode()}


class InjectTestCase(base.ApiTestCase):

    def setUp(self):
        super().setUp()
        self.image = self.guest_image(uuids.lab1)
        self.api.post_keypair({'keypair': {'name': 'lab',
                                           'public_key': KEY}})

    def assert_injected_by_the_chain(self, server):
        log = self.logged()
        disk = self.disk_path(server)
        self.assertIn('Skipping image handler loop for %s: cannot do '
                      'copy-on-write' % disk, log)
        self.assertIn('into %s with handler fuse2fs' % disk, log)
        self.assert_nothing_left(server)

    def assert_base_untouched(self):
        [cached] = self.base_images()
        spec = '%s?offset=%d' % (cached, images.PARTITION_OFFSET)
        out = subprocess.run(['debugfs', '-R', 'stat /root/.ssh', spec],
                             capture_output=True, text=True)
        self.assertIn('File not found', out.stderr + out.stdout)


class TestBoot(InjectTestCase):

    def test_keypair_admin_pass_and_network(self):
        server = self.boot(self.image, key_name='lab', adminPass=PASSWORD,
                           metadata={'course': 'lab1'})
        disk = self.guest_disk(server)
        # nova's real Qcow2 backend: an overlay on the image in _base.
        [cached] = self.base_images()
        self.assertIn('backing file: %s' % cached, disk.info())
        self.assertIn(KEY, disk.cat('/root/.ssh/authorized_keys'))
        hashed = disk.root_hash()
        self.assertTrue(hashed.startswith('$6$'), hashed)
        self.assertTrue(nova_base.verify_sha512_crypt(PASSWORD, hashed))
        self.assertIn('lab:!:', disk.cat('/etc/shadow'))
        self.assertIn('"course": "lab1"', disk.cat('/meta.js'))
        # The network config nova rendered for the port neutron gave it.
        [address] = [a['addr'] for net in server['addresses'].values()
                     for a in net if a['version'] == 4]
        interfaces = disk.cat('/etc/network/interfaces')
        self.assertIn('# Injected by Nova on instance boot', interfaces)
        self.assertIn('iface eth0 inet static', interfaces)
        self.assertIn('address %s' % address, interfaces)
        self.assertIn('gateway 192.168.1.1', interfaces)
        self.assert_base_untouched()
        self.assert_injected_by_the_chain(server)
        self.assertNotIn(PASSWORD, self.logged())

    def test_personality_files(self):
        server = self.boot(self.image, personality=[
            personality('/etc/motd', MOTD),
            personality('/opt/lab/setup.sh', '#!/bin/sh\necho lab\n')])
        disk = self.guest_disk(server)
        self.assertEqual(MOTD, disk.cat('/etc/motd'))
        self.assertEqual('#!/bin/sh\necho lab\n',
                         disk.cat('/opt/lab/setup.sh'))
        self.assertIn('Injecting net, admin_password, 2 files into image',
                      self.logged())
        self.assert_injected_by_the_chain(server)

    def test_config_drive_injects_nothing(self):
        # Control: the same request without a config drive is injected by
        # the handler chain (so what follows is not a driver that never
        # injects).
        control = self.boot(self.image, key_name='lab', adminPass=PASSWORD,
                            personality=[personality('/etc/motd', MOTD)])
        self.assertEqual(MOTD, self.guest_disk(control).cat('/etc/motd'))
        self.assert_injected_by_the_chain(control)
        server = self.boot(self.image, key_name='lab', adminPass=PASSWORD,
                           config_drive=True,
                           personality=[personality('/etc/motd', MOTD)])
        disk = self.guest_disk(server)
        # The root disk is the image as it was; the data is in the drive.
        [cached] = self.base_images()
        with open(cached, 'rb') as f, open(disk.flat, 'rb') as g:
            self.assertEqual(f.read(), g.read(os.path.getsize(cached)))
        config = os.path.join(os.path.dirname(disk.overlay), 'disk.config')
        meta = images.run('isoinfo', '-R', '-i', config, '-x',
                          '/openstack/latest/meta_data.json').decode()
        self.assertIn(KEY, meta)
        # The handler chain never ran for it.
        self.assertEqual([], [line for line in self.logged().splitlines()
                              if '[nova_ksm_inject.disk' in line
                              and server['id'] in line])
        self.assertEqual(1, self.logged().count('Injecting '
                                                'key, net, admin_password'))

    def test_rebuild_injects_again_into_the_new_disk(self):
        server = self.boot(self.image, key_name='lab', adminPass=PASSWORD,
                           personality=[personality('/etc/motd', MOTD)])
        first = self.guest_disk(server).root_hash()
        self.api.post_server_action(server['id'], {'rebuild': {
            'imageRef': self.image, 'adminPass': 'Lab-2-s3cret',
            'personality': [personality('/etc/motd', 'Lab 2\n')]}})
        self.notifier.wait_for_versioned_notifications(
            'instance.rebuild.end')
        server = self._wait_for_state_change(server, 'ACTIVE')
        disk = self.guest_disk(server)
        hashed = disk.root_hash()
        self.assertNotEqual(first, hashed)
        self.assertTrue(nova_base.verify_sha512_crypt('Lab-2-s3cret',
                                                      hashed))
        self.assertEqual('Lab 2\n', disk.cat('/etc/motd'))
        self.assertIn(KEY, disk.cat('/root/.ssh/authorized_keys'))
        self.assertEqual(2, self.logged().count(
            'into %s with handler fuse2fs' % self.disk_path(server)))
        self.assert_nothing_left(server)


class TestNoHandlerCanMount(InjectTestCase):
    """A disk whose partition 1 holds no filesystem."""

    def setUp(self):
        super().setUp()
        self.blank = self.guest_image(uuids.blank, name='blank',
                                      filesystem=False)

    def test_key_is_best_effort_the_guest_boots(self):
        server = self.boot(self.blank, key_name='lab', adminPass=PASSWORD)
        warnings = [line for line in self.logged().splitlines()
                    if 'WARNING' in line and 'Ignoring error injecting data '
                    'into image %s' % self.blank in line]
        self.assertEqual(1, len(warnings), self.logged())
        self.assertIn('fuse2fs', warnings[0])
        # Nothing was written: the guest's disk reads as the image.
        disk = self.guest_disk(server)
        [cached] = self.base_images()
        with open(cached, 'rb') as f, open(disk.flat, 'rb') as g:
            self.assertEqual(f.read(), g.read(os.path.getsize(cached)))
        self.assert_nothing_left(server)

    def test_files_are_mandatory_the_build_fails_with_the_cause(self):
        server = self.boot(self.blank, expected_state='ERROR',
                           personality=[personality('/etc/motd', MOTD)])
        # Every host would fail alike: the build is aborted on its only
        # host (no reschedule), and nova's fault says why, on one line.
        self.assertEqual(500, server['fault']['code'])
        message = server['fault']['message']
        self.assertIn('cannot inject into image %s: No image handler could '
                      'mount' % self.blank, message)
        self.assertNotIn('Exceeded maximum number of retries', message)
        self.assertNotIn('\n', message)
        self.assertIn('Error injecting data into image %s' % self.blank,
                      self.logged())
        events = self.api.api_get(
            '/servers/%s/os-instance-actions' % server['id']
        ).body['instanceActions']
        self.assertEqual('create', events[0]['action'])
        self.assertFalse(os.path.exists(self.disk_path(server)))
