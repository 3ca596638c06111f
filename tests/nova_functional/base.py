"""nova's functional harness with our compute driver and nova's real
image backend.

nova's own libvirt functional base (``ServersTestBase``) replaces the image
backend with mocks (``LibvirtImageBackendFixture``) and stubs
``_create_image``. Here only the hypervisor is fake (nova's fake libvirt):
nova's Qcow2 backend downloads the image from the fake glance into
``_base``, creates the instance's overlay with qemu-img, and our driver
injects into that file through the handler chain.
"""

import os
import subprocess
import sys
import tempfile

import fixtures
from nova import context as nova_context
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional.api import client as api_client
from nova.tests.functional.libvirt import base as libvirt_base

# Registers our options next to nova's, as loading the driver does.
from nova_ksm_inject.virt.libvirt import driver  # noqa: F401
from tests.nova import base as nova_base
from tests.nova_functional import images

COMPUTE_DRIVER = nova_base.COMPUTE_DRIVER
OTHER_PROJECT = 'b7c9a2f4c4b84c1e9d1d2f0f5e6a7b8c'
#: keystone puts the names in every request; nova writes them into the
#: domain's <nova:owner> (only when it has both id and name).
PROJECT_NAMES = {nova_fixtures.PROJECT_ID: 'lab', OTHER_PROJECT: 'other'}


class ApiTestCase(nova_base.PytestCompatible, libvirt_base.ServersTestBase):
    """The REST API, conductor, scheduler and one compute running
    ``compute_driver = ksm_inject.LibvirtDriver`` on nova's fake libvirt.

    ``start_compute`` comes from nova's ``ServersTestBase``; its ``setUp``
    is replaced because it mocks the image backend this tier exercises.
    """

    REQUIRES_LOCKING = True
    ADMIN_API = False
    # 2.56: the last microversion with personality files (2.57 removed
    # them); rebuild accepts them too.
    microversion = '2.56'

    def setUp(self):
        nova_base.require_root(self)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.instances_path = os.path.join(self.tmp, 'instances')
        self.flags(instances_path=self.instances_path)
        # nova's wheel installs its API pipeline as a data file of the
        # environment, not next to the package where its tests look.
        self.flags(api_paste_config=os.path.join(
            sys.prefix, 'etc', 'nova', 'api-paste.ini'), group='wsgi')
        self.computes = {}
        self.compute_rp_uuids = {}
        # Skip ServersTestBase.setUp (it mocks the image backend), keep
        # everything below it: DBs, placement, glance, neutron, API.
        super(libvirt_base.ServersTestBase, self).setUp()
        self._use_hypervisor()
        self._configure_injection()
        self._name_projects()
        self.context = nova_context.get_admin_context()
        self.start_compute()

    def _use_hypervisor(self):
        """nova's fake libvirt and the host facts nova reads from the
        kernel (as nova's ServersTestBase sets them up); no image mocks."""
        self.useFixture(nova_fixtures.CGroupsFixture())
        self.libvirt = self.useFixture(nova_fixtures.LibvirtFixture())
        self.useFixture(nova_fixtures.OSBrickFixture())
        # nova's privileged helpers (utime, chown of the console log) run
        # in this process, which is root: what its privsep daemon does.
        self.useFixture(nova_fixtures.PrivsepFixture())
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.driver.libvirt_utils.is_valid_hostname',
            return_value=True))
        self.useFixture(fixtures.MockPatch(
            'nova.privsep.utils.supports_direct_io', return_value=True))
        # What placement is told the host's disk holds (a fake host's
        # figure: nova's fixtures leave 1 GB otherwise, one guest).
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.LibvirtDriver._get_local_gb_info',
            return_value={'total': 128, 'used': 44, 'free': 84}))
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.host.Host.get_online_cpus',
            return_value=set(range(16))))
        patcher = fixtures.MockPatch(
            'nova.virt.libvirt.host.Host.get_connection')
        self.mock_conn = self.useFixture(patcher).mock

    def _name_projects(self):
        """Contexts with project and user names, as keystone gives them
        (nova's stand-in for keystone sets only the ids)."""
        from nova.api import auth
        create = auth.NovaKeystoneContext._create_context

        def named(env, **kwargs):
            ctx = create(env, **kwargs)
            ctx.project_name = PROJECT_NAMES.get(ctx.project_id)
            ctx.user_name = ctx.user_id
            return ctx
        self.useFixture(fixtures.MonkeyPatch(
            'nova.api.auth.NovaKeystoneContext._create_context', named))

    def _configure_injection(self):
        # nova's defaults for the image backend: qcow2 overlays on a raw
        # cached base (use_cow_images, force_raw_images).
        self.flags(use_cow_images=True, force_raw_images=True)
        # loop cannot do copy-on-write, so the chain passes it over for
        # fuse2fs (the default's first). (nbd is left out: this kernel has
        # none, and nova's harness forbids reading /sys, where nbd looks
        # for its devices.) The disks are nova's, as on a compute node.
        self.flags(img_handlers=['loop', 'fuse2fs'])
        nova_base.disks_owned_by_nova(self)
        self.flags(state_dir=os.path.join(self.tmp, 'inject-state'),
                   group='inject')
        self.flags(inject_partition=1, inject_key=True, inject_password=True,
                   group='libvirt')
        # nova renders /etc/network/interfaces for networks marked
        # "injected"; neutron's networks are when flat_injected is set.
        self.flags(flat_injected=True)
        self.flags(state_dir=os.path.join(self.tmp, 'ksm-state'),
                   group='ksm')
        # KSM is global to the machine and nova's harness forbids touching
        # /sys: nova-compute starts as on a host without KSM (tests/nova
        # covers init_host on a fake KSM tree).
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ksm_inject.ksm.sysfs.KSM_ROOT',
            os.path.join(self.tmp, 'no-ksm')))

    def _setup_compute_service(self):
        # Started by setUp once the hypervisor is faked.
        self.flags(compute_driver=COMPUTE_DRIVER)

    # Images -----------------------------------------------------------
    def register_image(self, path, image_id, name, properties=None):
        """Upload a raw disk file to nova's fake glance."""
        with open(path, 'rb') as f:
            self.glance.create(self.context, {
                'id': image_id, 'name': name, 'status': 'active',
                'visibility': 'public', 'disk_format': 'raw',
                'container_format': 'bare', 'min_disk': 0, 'min_ram': 0,
                'size': os.path.getsize(path),
                'properties': dict(properties or {})}, data=f)
        return image_id

    def guest_image(self, image_id, name='lab1', properties=None, **kw):
        """A real guest disk (MBR, ext4 in partition 1) in glance."""
        path = images.partitioned_guest(os.path.join(self.tmp, name), **kw)
        return self.register_image(path, image_id, name, properties)

    # Disks ------------------------------------------------------------
    def disk_path(self, server):
        return os.path.join(self.instances_path, server['id'], 'disk')

    def guest_disk(self, server):
        """The instance's root disk as an independent reader sees it."""
        return images.GuestDisk(self.disk_path(server), self.tmp)

    def base_images(self):
        base = os.path.join(self.instances_path, '_base')
        return sorted(os.path.join(base, n) for n in os.listdir(base))

    # API --------------------------------------------------------------
    def api_for_project(self, project_id):
        """A member of another project, on the same API."""
        api = api_client.TestOpenStackClient(
            'fake', self.api_fixture.base_url, project_id=project_id,
            roles=['reader', 'member'])
        api.microversion = self.microversion
        return api

    def boot(self, image_id, api=None, expected_state='ACTIVE', **fields):
        """POST /servers with ``fields`` added to the request body."""
        api = api or self.api
        body = self._build_server(image_uuid=image_id, flavor_id='1',
                                  networks=fields.pop('networks', 'auto'))
        body.update(fields)
        server = api.post_server({'server': body})
        return self._wait_for_state_change(server, expected_state)

    def assert_nothing_left(self, server):
        self.assertEqual([], nova_base.loops_backing(self.disk_path(server)))
        self.assertEqual([], nova_base.mounts_under(tempfile.gettempdir()))
        self.assertEqual([], _qemu_processes_for(self.disk_path(server)))


def _qemu_processes_for(path):
    out = subprocess.run(['pgrep', '-af', 'qemu-storage-daemon'],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if path in line]
