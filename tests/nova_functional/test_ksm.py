"""Per-instance KSM policy through nova's API: the flavor extra spec
(validated by nova-api through our entry point), the image property and
``[ksm] mergeable_projects`` decide which domain XML gets
``<nosharepages/>``; the hook, fed the XML nova handed to libvirt, counts
the others and records whose they are; ``ksm status`` shows it. A value
that is not a boolean, which nova-api stores below 2.86 (and never checks
on images), fails the build on the compute node."""

import os
import xml.etree.ElementTree as ElementTree

import fixtures
from nova.api.validation.extra_specs import validators
from nova.tests import fixtures as nova_fixtures
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.api import client as api_client
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import settings as ksm_settings
from nova_ksm_inject.ksm import statedir as ksm_statedir
from nova_ksm_inject.ksm import status as ksm_status
from nova_ksm_inject.ksm.hook import handler
from tests.nova_functional import base
from tests.unit.ksm import conftest as ksm_fakes

LAB = nova_fixtures.PROJECT_ID
OTHER = base.OTHER_PROJECT


class KsmTestCase(base.ApiTestCase):
    # 2.86: nova-api validates flavor extra specs.
    microversion = '2.86'

    def setUp(self):
        super().setUp()
        # Injection is tested elsewhere; here only the domain XML matters.
        self.flags(inject_partition=-2, group='libvirt')
        self.flags(mergeable_projects=[LAB], group='ksm')
        self.defined = {}
        define = fakelibvirt.Connection.defineXML

        def spy(conn, xml):
            # The XML exactly as nova hands it to libvirt.
            self.defined[ElementTree.fromstring(xml).findtext('uuid')] = xml
            return define(conn, xml)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Connection.defineXML', spy))

    def flavor(self, flavor_id, extra_specs=None):
        self.admin_api.post_flavor({'flavor': {
            'id': flavor_id, 'name': flavor_id, 'ram': 512, 'vcpus': 1,
            'disk': 1}})
        if extra_specs:
            self.admin_api.post_extra_spec(flavor_id,
                                           {'extra_specs': extra_specs})
        return flavor_id

    def set_extra_spec(self, value, key='ksm:merge'):
        """POST a flavor extra spec; returns (status, message)."""
        try:
            self.admin_api.post_extra_spec(
                self.flavor_id, {'extra_specs': {key: value}})
        except api_client.OpenStackApiException as err:
            return err.response.status_code, err.response.json()[
                'badRequest']['message']
        return 200, ''


class TestExtraSpecValidator(KsmTestCase):

    def setUp(self):
        super().setUp()
        self.flavor_id = self.flavor('lab.validated')

    def test_nova_api_refuses_bad_ksm_values_like_its_own(self):
        self.assertEqual((400, "Validation failed; 'maybe' is not a valid "
                               "boolean-like value."),
                         self.set_extra_spec('maybe'))
        self.assertEqual((400, "Validation failed; extra spec 'ksm:merj' "
                               "does not appear to be a valid extra spec."),
                         self.set_extra_spec('false', key='ksm:merj'))
        # As nova's own namespaces are.
        self.assertEqual(400, self.set_extra_spec(
            'maybe', key='hw:cpu_policy')[0])
        self.assertEqual((200, ''), self.set_extra_spec('false'))
        self.assertEqual({'ksm:merge': 'false'},
                         self.admin_api.get_extra_specs(self.flavor_id))

    def test_without_the_package_nova_api_accepts_anything(self):
        # What an API node without nova-ksm-inject installed does: the ksm
        # namespace is unknown to it.
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.validation.extra_specs.validators.VALIDATORS',
            {k: v for k, v in validators.VALIDATORS.items()
             if not k.startswith('ksm:')}))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.validation.extra_specs.validators.NAMESPACES',
            validators.NAMESPACES - {'ksm'}))
        self.assertEqual((200, ''), self.set_extra_spec('maybe'))


ACCEPTED = ('is not a boolean; use true or false (also accepted, in any '
            'case: 1/0, t/f, on/off, y/n, yes/no)')


class TestBadValuesRefused(KsmTestCase):
    """The API client's default microversion (no header: 2.1), where
    nova-api validates no extra spec: the driver refuses, the build ends
    on the first host (ERROR, no reschedule), nothing is left behind."""

    microversion = None

    def setUp(self):
        super().setUp()
        # Injection as by default: the refusal comes before it.
        self.flags(inject_partition=1, group='libvirt')
        self.lab1 = self.guest_image(uuids.lab1)

    def boot_at_default_microversion(self, image_id, flavor_id='1',
                                     expected_state='ERROR'):
        self.assertIsNone(self.api.microversion)
        return self.boot(image_id, flavorRef=flavor_id, networks=None,
                         expected_state=expected_state)

    def assert_build_aborted(self, server, message):
        # Aborted, not re-scheduled: nova's fault for a retried build says
        # "Exceeded maximum number of retries".
        self.assertEqual('Build of instance %s aborted: %s'
                         % (server['id'], message),
                         server['fault']['message'])
        self.assertNotIn('re-scheduled', self.logged())
        self.assertEqual(1, self.logged().count('Refusing to build'))

    def assert_nothing_created(self, server):
        self.assertNotIn(server['id'], self.defined)
        self.assertFalse(os.path.exists(os.path.dirname(
            self.disk_path(server))))
        self.assertEqual([], _files_under(os.path.join(self.instances_path,
                                                       '_base')))
        self.assertEqual([], _files_under(os.path.join(self.tmp,
                                                       'inject-state')))
        self.assertNotIn('Injecting ', self.logged())
        self.assert_nothing_left(server)

    def test_flavor_stored_below_2_86_fails_the_build(self):
        flavor = self.flavor('lab.maybe', {'ksm:merge': 'maybe'})
        self.assertEqual({'ksm:merge': 'maybe'},
                         self.admin_api.get_extra_specs(flavor))
        server = self.boot_at_default_microversion(self.lab1, flavor)
        self.assert_build_aborted(
            server, "ksm:merge='maybe' in flavor lab.maybe " + ACCEPTED)
        self.assert_nothing_created(server)

    def test_image_property_fails_the_build(self):
        maybe = self.guest_image(uuids.maybe, name='maybe',
                                 properties={'ksm_merge': 'maybe'})
        server = self.boot_at_default_microversion(maybe)
        self.assert_build_aborted(
            server, "ksm_merge='maybe' in image %s %s" % (maybe, ACCEPTED))
        self.assert_nothing_created(server)

    def test_rebuild_refused_before_the_guest_is_destroyed(self):
        server = self.boot_at_default_microversion(
            self.lab1, expected_state='ACTIVE')
        disk = os.stat(self.disk_path(server))
        maybe = self.guest_image(uuids.maybe, name='maybe',
                                 properties={'ksm_merge': 'maybe'})
        # nova's harness turns RPC casts into calls: the compute's failure
        # reaches the API request (a real nova-api has answered 202).
        self.assertRaises(api_client.OpenStackApiException,
                          self.api.post_server_action, server['id'],
                          {'rebuild': {'imageRef': maybe}})
        server = self._wait_for_state_change(server, 'ERROR')
        self.assert_build_aborted(
            server, "ksm_merge='maybe' in image %s %s" % (maybe, ACCEPTED))
        # nova's rebuild would have destroyed it (disk and domain) first.
        self.assertEqual(disk.st_ino, os.stat(self.disk_path(server)).st_ino)
        self.assertNotIn('Deleting instance files', self.logged())
        self.assert_nothing_left(server)

def _files_under(directory):
    return [os.path.join(top, name) for top, _, names in os.walk(directory)
            for name in names]


class TestResizeRefused(KsmTestCase):
    """A resize to a flavor whose ``ksm:merge`` is not a boolean is
    refused before the guest is touched; it keeps running as it was."""

    microversion = None
    # As in a deployment: the API answers 202 and the computes work on
    # (nova's harness otherwise makes casts calls, and the failure would
    # travel back through prep_resize, which sets ERROR).
    CAST_AS_CALL = False

    def test_guest_kept_running_on_its_flavor(self):
        self.flags(allow_resize_to_same_host=True)
        server = self.boot(self.guest_image(uuids.lab1), networks=None)
        disk = os.stat(self.disk_path(server))
        flavor = self.flavor('lab.maybe', {'ksm:merge': 'maybe'})
        self.api.post_server_action(server['id'],
                                    {'resize': {'flavorRef': flavor}})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('1', server['flavor']['id'])
        self.assertIn("Refusing the resize: ksm:merge='maybe' in flavor "
                      "lab.maybe " + ACCEPTED, self.logged())
        # Neither powered off nor moved to a _resize directory.
        self.assertEqual(1, server['OS-EXT-STS:power_state'])
        self.assertEqual(disk.st_ino, os.stat(self.disk_path(server)).st_ino)
        self.assertFalse(os.path.exists(
            os.path.dirname(self.disk_path(server)) + '_resize'))


class TestWhoMayMerge(KsmTestCase):
    """Six guests: which may merge follows the policy, in the XML and in
    what the hook and ``ksm status`` make of that XML."""

    def setUp(self):
        super().setUp()
        lab1 = self.guest_image(uuids.lab1)
        private = self.guest_image(uuids.private, name='private',
                                   properties={'ksm_merge': 'false'})
        off = self.flavor('lab.no-ksm', {'ksm:merge': 'false'})
        on = self.flavor('lab.ksm', {'ksm:merge': 'true'})
        other_api = self.api_for_project(OTHER)
        # name: (api, flavor, image, project, may merge)
        cases = {
            'shared': (self.api, '1', lab1, LAB, True),
            'shared-explicit': (self.api, on, lab1, LAB, True),
            'flavor-off': (self.api, off, lab1, LAB, False),
            'image-off': (self.api, '1', private, LAB, False),
            'image-off-wins': (self.api, on, private, LAB, False),
            'other-project': (other_api, on, lab1, OTHER, False),
        }
        self.servers = {}
        for name, (api, flavor, image, project, mergeable) in cases.items():
            server = self.boot(image, api=api, networks='none', name=name,
                               flavorRef=flavor)
            self.servers[name] = (server, project, mergeable)

    def test_nosharepages_exactly_where_merging_is_not_allowed(self):
        for name, (server, _, mergeable) in self.servers.items():
            root = ElementTree.fromstring(self.defined[server['id']])
            backing = root.find('memoryBacking')
            has = backing is not None and \
                backing.find('nosharepages') is not None
            self.assertEqual(not mergeable, has, name)

    def feed_the_hook(self):
        """The hook, on a fake KSM tree, at each guest's ``prepare begin``
        with the XML nova handed to libvirt; returns the last result."""
        tmp = self.useFixture(fixtures.TempDir()).path
        self.fake_ksm = ksm_fakes.FakeKsm(os.path.join(tmp, 'ksm'))
        self.fake_proc = ksm_fakes.FakeProc(os.path.join(tmp, 'proc'))
        self.statedir = ksm_statedir.KsmStateDir(os.path.join(tmp, 'state'))
        runner = handler.Hook(
            ksm_settings.KsmSettings(enabled='auto', policy='static'),
            ksm_host.KsmHost(self.fake_ksm.sysfs), self.statedir,
            proc_root=self.fake_proc.root, run_dir=os.path.join(tmp, 'run'))
        for server, _, _ in self.servers.values():
            result = runner.handle(server['OS-EXT-SRV-ATTR:instance_name'],
                                   'prepare', 'begin',
                                   self.defined[server['id']])
        return result

    def start_qemus(self):
        """The qemu processes the guests would be: only the mergeable
        ones ask KSM to merge (mem-merge=off for the others)."""
        for pid, (server, _, mergeable) in enumerate(
                self.servers.values(), start=4000):
            self.fake_proc.add(pid, comm='qemu-system-x86', cmdline=[
                'qemu-system-x86_64', '-name', 'guest=%s,debug-threads=on'
                % server['OS-EXT-SRV-ATTR:instance_name']],
                mergeable=mergeable, merging=1000 if mergeable else 0)
        self.fake_ksm.set('pages_sharing', 1000)

    def test_hook_counts_the_others_and_ksm_status_says_whose(self):
        self.assertEqual(2, self.feed_the_hook().mergeable_guests)
        self.assert_hook_records()
        self.start_qemus()
        self.assert_status()

    def assert_hook_records(self):
        self.assertEqual('1', self.fake_ksm.get('run'))
        records = {r['instance']: r for r in self.statedir.guests()}
        for name, (server, project, mergeable) in self.servers.items():
            record = records[server['id']]
            self.assertEqual(
                (project, base.PROJECT_NAMES[project], mergeable),
                (record['project'], record['project_name'],
                 record['mergeable']), name)

    def assert_status(self):
        status = ksm_status.collect(
            self.fake_ksm.sysfs, self.statedir, lambda: 0.0, lambda s: None,
            window=0, proc_root=self.fake_proc.root)
        shared = {self.servers[n][0]['id'] for n in ('shared',
                                                     'shared-explicit')}
        self.assertEqual(shared, {g['instance'] for g in status['guests']})
        self.assertEqual({LAB}, {g['project'] for g in status['guests']})
        self.assertEqual([(LAB, 2, 1000 * 4096)], [
            (p['project'], p['guests'], p['saved_bytes'])
            for p in status['projects']])
        text = ksm_status.format_text(status)
        for server_id in shared:
            self.assertIn(' %s %s (lab) ' % (server_id, LAB), text)
        self.assertIn('Project %s (lab): 2 guests, saved 3.9 MiB' % LAB,
                      text)
