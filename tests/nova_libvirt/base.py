"""nova on the real hypervisor: real QEMU guests on the host's libvirtd.

nova's API, conductor, scheduler and placement run as nova's functional
harness runs them (``tests/nova_functional``), with nova's real Qcow2
image backend; the compute service runs our driver against the host's
libvirtd (``qemu:///system``; ``virt_type = qemu``, or kvm with
``NOVA_KSM_TEST_VIRT_TYPE=kvm`` where KVM works). That libvirtd runs our
hook, installed with our own ``nova-ksm-inject ksm install-hook``, and
``nova-ksm-tuner`` runs beside it, all on the real KSM. Glance serves a
bootable Debian disk (the debootstrap recipe of
``tests/lib/guest_image.py``) whose kernel and initrd are glance images
too (``kernel_id``/``ramdisk_id``, nova's
direct kernel boot); at boot the guest prints what it read from its own
disk to its serial console, which the tests read through nova's
``os-getConsoleOutput``.

TCG boots take minutes, so a module's tests share one cloud
(:func:`cloud`) and its servers. nova-compute runs as root here (in the
test process); the disks are handed to ``nobody`` before injection, as
the default handlers find them on a compute node where nova-compute runs
as ``nova``.
"""

import contextlib
import json
import os
import subprocess
import tempfile
import time
import traceback
import uuid

import fixtures

from tests.lib import guest_image
from tests.lib import ksm_state
from tests.lib import libvirtd
from tests.nova import base as nova_base
from tests.nova_functional import base as functional_base

#: Our domains, and only ours, are named so (cleaned up by name).
NAME_PREFIX = 'nova-ksm-test-'
#: Each guest's memory; a Debian minbase guest boots in it.
GUEST_MIB = 384
#: Guests on the real hypervisor may be this slow to print (TCG).
BOOT_TIMEOUT = 600
#: A build (image download and conversion, injection) or a delete.
API_TIMEOUT = 300
BIN = ksm_state.BIN


def virt_type():
    """``NOVA_KSM_TEST_VIRT_TYPE``, else qemu (TCG): /dev/kvm can be there
    and still not run guests (on these hosts QEMU aborts or hangs under
    KVM); set kvm where it works."""
    return os.environ.get('NOVA_KSM_TEST_VIRT_TYPE', 'qemu')


def virsh(*args, check=True):
    return subprocess.run(['virsh', '-c', libvirtd.SYSTEM_URI] + list(args),
                          capture_output=True, text=True, check=check).stdout


def our_domains():
    names = virsh('list', '--all', '--name').split()
    return [n for n in names if n.startswith(NAME_PREFIX)]


def remove_our_domains():
    for name in our_domains():
        virsh('destroy', name, check=False)
        virsh('undefine', name, check=False)


def cli(*args, timeout=120):
    """One of our console scripts; the CompletedProcess."""
    return subprocess.run([os.path.join(BIN, args[0])] + list(args[1:]),
                          capture_output=True, text=True, timeout=timeout)


class Hypervisor(object):
    """The host's libvirtd with our hook, and nova-ksm-tuner, on the real
    KSM, for the duration of a module (KSM lock held, knobs restored)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.ksm_state_dir = os.path.join(workdir, 'ksm-state')
        self.conf = os.path.join(workdir, 'nova-ksm.conf')
        with open(self.conf, 'w') as f:
            f.write('[ksm]\nenabled = auto\npolicy = adaptive\n'
                    'poll_interval = 0.5\nrestore_on_exit = true\n'
                    'state_dir = %s\n' % self.ksm_state_dir)
        self.tuner = None

    @contextlib.contextmanager
    def running(self):
        with ksm_state.saved() as saved:
            self.saved_knobs = saved
            remove_our_domains()
            installed = cli('nova-ksm-inject', 'ksm', 'install-hook',
                            '--config-file', self.conf)
            assert installed.returncode == 0, installed.stderr
            try:
                libvirtd.restart_system_libvirtd()
                self.tuner = ksm_state.TunerProcess(
                    self.conf, os.path.join(self.workdir, 'tuner.log'),
                    self.ksm_state_dir).start()
                try:
                    yield self
                finally:
                    remove_our_domains()
                    assert self.tuner.stop() == 0
            finally:
                cli('nova-ksm-inject', 'ksm', 'install-hook', '--remove')
                libvirtd.restart_system_libvirtd()

    def ksm_status(self):
        out = cli('nova-ksm-inject', 'ksm', 'status', '--json',
                  '--config-file', self.conf)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


class RealCloud(functional_base.ApiTestCase):
    """nova's harness with the compute service on the real hypervisor."""

    # RPC casts stay casts, as in a deployment: nova's harness otherwise
    # makes them calls, and an API request would wait (and time out) for a
    # build or a rebuild on the real hypervisor.
    CAST_AS_CALL = False

    def __init__(self, hypervisor):
        super().__init__('runTest')
        self.hypervisor = hypervisor

    def runTest(self):
        """A module's tests share this harness (see :func:`cloud`)."""

    def _use_hypervisor(self):
        from nova.tests import fixtures as nova_fixtures
        from nova.virt.libvirt import host

        # nova's privileged helpers run in this (root) process.
        self.useFixture(nova_fixtures.PrivsepFixture())
        # As on a compute node: instances_path exists, and libvirt's QEMU
        # user reaches the instance directories in it.
        os.chmod(self.tmp, 0o755)
        os.makedirs(self.instances_path, mode=0o755)
        # Every libvirt Host nova makes ends its event loop at cleanup
        # (before nova's executor cleanup, registered earlier, waits).
        hosts = []
        init = host.Host.__init__

        def tracked(self_, *args, **kwargs):
            init(self_, *args, **kwargs)
            hosts.append(self_)
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host.__init__', tracked))
        self.addCleanup(lambda: [_stop_event_dispatch(h) for h in hosts])

    def _configure_injection(self):
        self.flags(use_cow_images=True, force_raw_images=True)
        nova_base.disks_owned_by_nova(self)
        # The Debian disk has no partition table: inject into the whole
        # disk, with the default handlers (fuse2fs, guestfs).
        self.flags(inject_partition=0, inject_key=True, inject_password=True,
                   virt_type=virt_type(), connection_uri=libvirtd.SYSTEM_URI,
                   group='libvirt')
        self.flags(instance_name_template=NAME_PREFIX + '%08x')
        self.flags(state_dir=os.path.join(self.tmp, 'inject-state'),
                   group='inject')
        self.flags(enabled='auto', policy='adaptive',
                   state_dir=self.hypervisor.ksm_state_dir, group='ksm')

    def start_compute(self, hostname='compute1'):
        self.flags(compute_driver=functional_base.COMPUTE_DRIVER)
        compute = self.start_service('compute', host=hostname)
        self.computes[hostname] = compute
        return compute

    # Images -----------------------------------------------------------
    def debian_image(self):
        """The Debian disk and its kernel and initrd in glance; the
        image's id."""
        kernel, initrd, cmdline = guest_image.boot_args()
        kernel_id = self._register(kernel, 'aki', 'vmlinuz')
        ramdisk_id = self._register(initrd, 'ari', 'initrd')
        return self._register(
            guest_image.cached_image(progress=print), 'qcow2', 'debian',
            properties={'kernel_id': kernel_id, 'ramdisk_id': ramdisk_id,
                        # No systemd status lines on the console.
                        'os_command_line': cmdline
                        + ' systemd.show_status=false'})

    def _register(self, path, disk_format, name, properties=None):
        image_id = str(uuid.uuid4())
        container = disk_format if disk_format in ('aki', 'ari') else 'bare'
        with open(path, 'rb') as f:
            self.glance.create(self.context, {
                'id': image_id, 'name': name, 'status': 'active',
                'visibility': 'public', 'disk_format': disk_format,
                'container_format': container, 'min_disk': 0, 'min_ram': 0,
                'size': os.path.getsize(path),
                'properties': dict(properties or {})}, data=f)
        return image_id

    def flavor(self, name, extra_specs=None):
        return self._create_flavor(name=name, memory_mb=GUEST_MIB, vcpu=1,
                                   disk=2, ephemeral=0,
                                   extra_spec=extra_specs)

    # Servers ----------------------------------------------------------
    def post(self, image_id, flavor_id, **fields):
        body = self._build_server(image_uuid=image_id, flavor_id=flavor_id,
                                  networks='none')
        body.update(fields)
        return self.api.post_server({'server': body})

    def wait_status(self, server, status, timeout=API_TIMEOUT):
        """The server once the API shows ``status`` (nova's own wait, with
        room for the real hypervisor)."""
        return self._wait_for_state_change(server, status,
                                           max_retries=int(timeout * 2))

    def delete(self, server, timeout=API_TIMEOUT):
        """DELETE the server and wait until the API no longer has it."""
        self.api.delete_server(server['id'])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api.get_server(server['id'])
            except functional_base.api_client.OpenStackApiNotFoundException:
                return
            time.sleep(0.5)
        raise AssertionError('server %s not deleted within %d s'
                             % (server['id'], timeout))

    def delete_all(self):
        """Delete every server (builds finish first in nova-compute), so
        that nova itself removes its domains and files before the harness
        goes."""
        for server in self.api.get_servers(detail=False):
            try:
                self.delete(server)
            except Exception as err:  # noqa: BLE001 (delete the others)
                print('cannot delete %s: %s' % (server['id'], err))

    def console(self, server):
        return self.api.post_server_action(
            server['id'], {'os-getConsoleOutput': {}})['output']

    def evidence(self, server, timeout=BOOT_TIMEOUT, until=None):
        """What the guest printed of its own disk at its last boot."""
        deadline = time.monotonic() + timeout
        while True:
            found = guest_image.evidence(self.console(server))
            if found is not None and (until is None or until(found)):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    'no evidence from %s within %d s; console:\n%s'
                    % (server['id'], timeout, self.console(server)[-2000:]))
            time.sleep(2)

    def domain_name(self, server):
        return self.admin_api.get_server(server['id'])[
            'OS-EXT-SRV-ATTR:instance_name']

    def qemu_pid(self, server):
        path = '/run/libvirt/qemu/%s.pid' % self.domain_name(server)
        with open(path) as f:
            return int(f.read())


@contextlib.contextmanager
def shared_cloud():
    """One hypervisor and one nova for a module; torn down after, also on
    failure (every cleanup of nova's fixtures runs)."""
    workdir = tempfile.mkdtemp(prefix='nki-nova-libvirt-')
    os.chmod(workdir, 0o755)
    hypervisor = Hypervisor(workdir)
    try:
        with hypervisor.running():
            case = RealCloud(hypervisor)
            try:
                try:
                    case.setUp()
                except Exception:
                    traceback.print_exc()
                    print(case.logged()[-20000:])
                    raise
                yield case
            finally:
                try:
                    case.delete_all()
                finally:
                    _run_cleanups(case)
    finally:
        subprocess.run(['rm', '-rf', workdir], check=False)


class _StopDispatch(BaseException):
    """Ends nova's connection-event loop (it catches Exception only)."""


def _stop_event_dispatch(host):
    # nova-compute's process exit ends the loop nova's Host runs in its
    # executor; here the test process goes on, and nova's executor cleanup
    # would wait for the loop forever.
    def stop():
        raise _StopDispatch()
    host._conn_event_handler_queue.put(stop)


def _run_cleanups(case):
    # What testtools does after a test: every cleanup, newest first.
    errors = []
    while case._cleanups:
        function, args, kwargs = case._cleanups.pop()
        try:
            function(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (keep cleaning up)
            errors.append(err)
    if errors:
        raise errors[0]
