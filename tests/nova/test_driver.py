"""The driver as nova-compute loads and starts it: nova's compute driver
loader, nova's option registry and ``init_host`` on nova's fake libvirt."""

import io
import os
import sys

import fixtures
from nova import exception as nova_exception
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.virt import driver as nova_driver
from nova.virt import fake
from nova.virt.libvirt import driver as nova_libvirt_driver
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_config import generator

from nova_ksm_inject import procfs
import nova_ksm_inject.conf  # noqa: F401  (after nova's, as nova-compute)
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from nova_ksm_inject.virt.libvirt import driver
from tests.nova import base

CONF = driver.CONF

NOVA_CONF = """
[DEFAULT]
compute_driver = %(driver)s
img_handlers = loop, qsd
use_cow_images = false

[libvirt]
inject_partition = 0
inject_key = true

[ksm]
enabled = true
policy = static
pages_to_scan = 1234
sleep_millisecs = 7
"""

KSM_TREE = {'run': '0', 'pages_to_scan': '100', 'sleep_millisecs': '20',
            'merge_across_nodes': '1', 'use_zero_pages': '0',
            'max_page_sharing': '256', 'pages_shared': '0',
            'pages_sharing': '0', 'advisor_mode': '[none] scan-time'}


class TestLoader(base.DriverTestCase):

    def _load_nova_conf(self):
        path = os.path.join(self.tmp, 'nova.conf')
        with open(path, 'w') as f:
            f.write(NOVA_CONF % {'driver': base.COMPUTE_DRIVER})
        self.useFixture(config_fixture.Config(CONF)).set_config_files([path])

    def test_nova_loader_finds_our_driver_from_nova_conf(self):
        self._load_nova_conf()
        loaded = nova_driver.load_compute_driver(fake.FakeVirtAPI())
        self.assertIsInstance(loaded, driver.LibvirtDriver)
        self.assertIsInstance(loaded, nova_libvirt_driver.LibvirtDriver)

    def test_nova_conf_sets_nova_and_our_options_together(self):
        self._load_nova_conf()
        self.assertEqual(['loop', 'qsd'], CONF.img_handlers)
        self.assertFalse(CONF.use_cow_images)
        self.assertTrue(CONF.libvirt.inject_key)
        self.assertEqual(1234, CONF.ksm.pages_to_scan)
        self.assertNotIn('deprecat', self.logged().lower())

    def test_options_nova_defines_keep_nova_definitions(self):
        # nova registered these first; ours stepped aside instead of
        # raising DuplicateOptError or shadowing nova's help and defaults.
        import nova.conf.compute
        import nova.conf.libvirt
        nova_opts = {o.dest: o for o in nova.conf.compute.ALL_OPTS}
        self.assertIs(nova_opts['use_cow_images'],
                      CONF._opts['use_cow_images']['opt'])
        libvirt_opts = {o.dest: o for o in nova.conf.libvirt.ALL_OPTS}
        self.assertIs(libvirt_opts['inject_partition'],
                      CONF._groups['libvirt']._opts['inject_partition']['opt'])
        self.assertIn('img_handlers', CONF)
        self.assertIn('ksm', CONF)
        self.assertIn('inject', CONF)

    def test_sample_with_nova_lists_ours_once(self):
        # nova_ksm_inject.nova lists only what nova does not define, for a
        # nova.conf sample; nova_ksm_inject (everything) is the standalone
        # sample's namespace.
        out = io.StringIO()
        conf = cfg.ConfigOpts()
        generator.register_cli_opts(conf)
        conf(['--namespace', 'nova.conf',
              '--namespace', 'nova_ksm_inject.nova'])
        generator.generate(conf, output_file=out)
        sample = out.getvalue()
        expected = ('[ksm]', '[inject]', '#img_handlers = fuse2fs,guestfs',
                    '#policy = adaptive', '#launch_timeout = 120')
        self.assertEqual([], [line for line in expected
                              if line not in sample.splitlines()])
        self.assertEqual([], _duplicated_options(sample))


def _duplicated_options(sample):
    seen, dups, group = set(), [], None
    for line in sample.splitlines():
        if line.startswith('['):
            group = line
        elif line.startswith('#') and ' = ' in line and \
                line[1:2].isalpha():
            key = (group, line.split(' = ')[0])
            if key in seen:
                dups.append('%s %s' % key)
            seen.add(key)
    return dups


class TestInitHost(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.ksm_root = os.path.join(self.tmp, 'ksm')
        os.makedirs(self.ksm_root)
        for name, value in KSM_TREE.items():
            with open(os.path.join(self.ksm_root, name), 'w') as f:
                f.write(value + '\n')
        proc_root = os.path.join(self.tmp, 'proc')
        os.makedirs(proc_root)
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ksm_inject.ksm.sysfs.KSM_ROOT', self.ksm_root))
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ksm_inject.procfs.PROC_ROOT', proc_root))
        self._use_fake_libvirt_module()
        self.node_params = []
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Connection.setMemoryParameters',
            self._fake_set_memory_parameters()))
        self.flags(state_dir=os.path.join(self.tmp, 'ksm-state'),
                   enabled='true', policy='static', pages_to_scan=1234,
                   sleep_millisecs=7, merge_across_nodes=False,
                   use_zero_pages=True, max_page_sharing=512, group='ksm')
        self.flags(img_handlers=['loop'])

    def _use_fake_libvirt_module(self):
        # Inside nova-compute "import libvirt" gives the module nova's
        # connection comes from; here that is nova's fake libvirt. (Only
        # this key: mock.patch.dict would drop every module imported
        # meanwhile from sys.modules on exit.)
        missing = object()
        previous = sys.modules.get('libvirt', missing)
        sys.modules['libvirt'] = fakelibvirt

        def restore():
            if previous is missing:
                del sys.modules['libvirt']
            else:
                sys.modules['libvirt'] = previous
        self.addCleanup(restore)

    def _fake_set_memory_parameters(self):
        test = self

        def set_memory_parameters(conn, params, flags):
            # As libvirtd does: write the node's KSM files.
            test.node_params.append(dict(params))
            for param, value in params.items():
                name = param[len('shm_'):]
                with open(os.path.join(test.ksm_root, name), 'w') as f:
                    f.write('%d\n' % value)
        return set_memory_parameters

    def _read(self, name):
        return ksm_sysfs.KsmSysfs(self.ksm_root).read(name)

    def test_init_host_applies_ksm_via_libvirt_and_sysfs(self):
        drvr = driver.LibvirtDriver(fake.FakeVirtAPI(), False)
        drvr.init_host('compute1')
        via_libvirt = {}
        for params in self.node_params:
            via_libvirt.update(params)
        self.assertEqual({'shm_pages_to_scan': 1234,
                          'shm_sleep_millisecs': 7,
                          'shm_merge_across_nodes': 0}, via_libvirt)
        self.assertEqual(1, self._read('run'))
        self.assertEqual(1, self._read('use_zero_pages'))
        self.assertEqual(512, self._read('max_page_sharing'))
        self.assertEqual(1234, self._read('pages_to_scan'))
        self.assertEqual(0, self._read('merge_across_nodes'))
        self.assertIn('Applied [ksm] to this hypervisor: ksmd running',
                      self.logged())
        self.assertIn('shm_pages_to_scan=1234', self.logged())

    def test_host_without_ksm_warns_once_and_starts(self):
        for name in os.listdir(self.ksm_root):
            os.unlink(os.path.join(self.ksm_root, name))
        os.rmdir(self.ksm_root)
        drvr = driver.LibvirtDriver(fake.FakeVirtAPI(), False)
        drvr.init_host('compute1')
        warnings = [line for line in self.logged().splitlines()
                    if 'KSM' in line and 'WARNING' in line]
        self.assertEqual(1, len(warnings), warnings)
        self.assertIn('KSM is not managed on this host', warnings[0])
        self.assertEqual([], self.node_params)

    def test_unknown_img_handler_stops_nova_compute(self):
        self.flags(img_handlers=['loop', 'lopp'])
        drvr = driver.LibvirtDriver(fake.FakeVirtAPI(), False)
        err = self.assertRaises(nova_exception.InvalidConfiguration,
                                drvr.init_host, 'compute1')
        self.assertIn('lopp', str(err))
        self.assertIn('loop', str(err).split('valid handlers')[1])
        self.assertEqual('0', open(os.path.join(self.ksm_root,
                                                'run')).read().strip())


def test_proc_root_default_is_real_proc():
    # The driver reads the module attributes at call time; the tests above
    # only work if these are the defaults nova-compute uses.
    assert procfs.PROC_ROOT == '/proc'
    assert ksm_sysfs.KSM_ROOT == '/sys/kernel/mm/ksm'
