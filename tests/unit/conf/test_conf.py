"""Options: nova's names, coexistence with nova, and the generated sample."""

import os
import subprocess
import sys

from oslo_config import cfg
import pytest

from nova_ksm_inject import conf as nki_conf
from nova_ksm_inject.conf import inject
from nova_ksm_inject.conf import opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# How nova itself defines these names (nova/conf/compute.py, libvirt.py,
# guestfs.py): same names and types, different help texts. Registering ours
# next to them must not raise DuplicateOptError.
NOVA_DEFAULT = [
    cfg.BoolOpt('use_cow_images', default=True, help='nova help text'),
    cfg.IntOpt('timeout_nbd', default=10, min=0, help='nova help text'),
    cfg.StrOpt('injected_network_template', default='/nova/template',
               help='nova help text'),
    cfg.StrOpt('instances_path', default='/nova/instances', help='nova'),
]
NOVA_LIBVIRT = [
    cfg.IntOpt('inject_partition', default=-2, min=-2, help='nova'),
    cfg.BoolOpt('inject_key', default=False, help='nova'),
    cfg.BoolOpt('inject_password', default=False, help='nova'),
]
NOVA_GUESTFS = [cfg.BoolOpt('debug', default=False, help='nova')]


def test_nova_registered_first_then_ours_coexist(tmp_path):
    conf = cfg.ConfigOpts()
    conf.register_opts(NOVA_DEFAULT)
    conf.register_opts(NOVA_LIBVIRT, group='libvirt')
    conf.register_opts(NOVA_GUESTFS, group='guestfs')
    nki_conf.register_opts(conf)  # must not raise DuplicateOptError
    conffile = tmp_path / 'nova.conf'
    conffile.write_text('[DEFAULT]\nuse_cow_images = False\n'
                        'img_handlers = qsd,guestfs\n'
                        '[libvirt]\ninject_partition = 1\ninject_key = true\n'
                        '[guestfs]\nbackend_settings = force_tcg\n')
    conf([], default_config_files=[str(conffile)])
    # nova's definitions stay in force (its default template path) ...
    assert conf.injected_network_template == '/nova/template'
    assert conf.instances_path == '/nova/instances'
    # ... and one nova.conf feeds both.
    assert conf.use_cow_images is False
    assert conf.img_handlers == ['qsd', 'guestfs']
    assert conf.libvirt.inject_partition == 1
    assert conf.libvirt.inject_key is True
    assert conf.guestfs.backend_settings == ['force_tcg']


def test_nova_registered_after_ours_takes_over(tmp_path):
    # Anything importing nova_ksm_inject.conf before nova.conf (a plugin,
    # a test collected first): nova's registration must not raise
    # DuplicateOptError over its help texts, and nova's definitions win.
    conf = cfg.ConfigOpts()
    nki_conf.register_opts(conf)
    conf.register_opts(NOVA_DEFAULT)
    conf.register_opts(NOVA_LIBVIRT, group='libvirt')
    conf.register_opts(NOVA_GUESTFS, group='guestfs')
    conffile = tmp_path / 'nova.conf'
    conffile.write_text('[DEFAULT]\nuse_cow_images = False\n'
                        '[libvirt]\ninject_partition = 1\n')
    conf([], default_config_files=[str(conffile)])
    assert conf.injected_network_template == '/nova/template'
    assert conf.instances_path == '/nova/instances'
    assert conf.use_cow_images is False
    assert conf.libvirt.inject_partition == 1
    assert conf.libvirt.inject_key is False
    assert conf.img_handlers == ['fuse2fs', 'guestfs']
    held = conf._opts['injected_network_template']['opt']
    assert held.help == 'nova help text'
    # Our module's own definition is untouched (the sample shows it).
    ours = {opt.name: opt for opt in inject.nova_default_opts}
    assert ours['injected_network_template'].help != 'nova help text'
    assert ours['injected_network_template'].default is None


def test_nova_name_of_another_type_still_conflicts():
    conf = cfg.ConfigOpts()
    nki_conf.register_opts(conf)
    with pytest.raises(cfg.DuplicateOptError):
        conf.register_opt(cfg.StrOpt('use_cow_images', help='not a bool'))


def test_registering_twice_is_harmless():
    conf = cfg.ConfigOpts()
    nki_conf.register_opts(conf)
    nki_conf.register_opts(conf)
    conf([])
    assert conf.img_handlers == ['fuse2fs', 'guestfs']


def test_historic_defaults_match_nova():
    conf = cfg.ConfigOpts()
    nki_conf.register_opts(conf)
    conf([])
    assert conf.use_cow_images is True
    assert conf.timeout_nbd == 10
    assert conf.libvirt.inject_partition == -2
    assert conf.libvirt.inject_key is False
    assert conf.libvirt.inject_password is False
    assert conf.inject.trusted_backing_dirs == [
        conf.instances_path + '/_base']


def test_out_of_range_value_is_rejected(tmp_path):
    conf = cfg.ConfigOpts()
    nki_conf.register_opts(conf)
    conffile = tmp_path / 'nova.conf'
    conffile.write_text('[libvirt]\ninject_partition = -5\n')
    conf([], default_config_files=[str(conffile)])
    with pytest.raises(ValueError):
        _ = conf.libvirt.inject_partition


def test_list_opts_covers_every_registered_group():
    listed = {getattr(g, 'name', g) for g, _ in opts.list_opts()}
    assert {'DEFAULT', 'inject', 'libvirt', 'guestfs', 'ksm'} <= listed


def test_checked_in_sample_is_current(tmp_path):
    """Fails when etc/nova-ksm-inject.conf.sample is stale: run
    ``tox -e genconfig`` and commit the result."""
    out = tmp_path / 'sample.conf'
    subprocess.run(
        [sys.executable, '-m', 'oslo_config.generator', '--namespace',
         'nova_ksm_inject', '--wrap-width', '79', '--output-file', str(out)],
        check=True, cwd=ROOT)
    with open(os.path.join(ROOT, 'etc', 'nova-ksm-inject.conf.sample')) as f:
        checked_in = f.read()
    assert out.read_text() == checked_in, (
        'etc/nova-ksm-inject.conf.sample is stale; run tox -e genconfig')
