"""Injection and KSM from an unprivileged user, through real privsep
daemons started with sudo (or a real oslo-rootwrap with the shipped
filters), verified with independent readers (debugfs, sysfs)."""

import os
import shutil

import pytest

from tests.functional.conftest import Debugfs
from tests.functional.conftest import sh
from tests.functional.ksm import conftest as ksm_conftest
from tests.functional.privsep import conftest as privsep_conftest
from tests.functional.privsep.conftest import assert_one_line_error

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPrivsepTestKey unpriv@ci'


@pytest.fixture
def key(site):
    return site.write_user_file('key.pub', KEY + '\n')


def assert_key(reader):
    assert KEY in reader.cat('/root/.ssh/authorized_keys')
    assert reader.stat('/root/.ssh/authorized_keys') == (0o100600, 0, 0)
    assert reader.stat('/root/.ssh') == (0o040700, 0, 0)


def test_loop_on_a_partitioned_raw_disk(site, key):
    os.makedirs(os.path.join(site.instances, 'vm1'))
    image, offset = site.images.raw_mbr('vm1/disk')
    site.give(image)
    motd = site.write_user_file('motd', 'hello from an unprivileged user\n')
    proc = site.run('inject', image, '--format', 'raw', '--partition', '2',
                    '--handlers', 'loop', '--no-cow', '--key-file', key,
                    '--file', '/etc/motd=%s' % motd, '--metadata', 'a=b')
    assert proc.returncode == 0, proc.stderr
    assert 'with handler loop' in proc.stdout
    reader = Debugfs(image, offset)
    assert_key(reader)
    assert reader.cat('/etc/motd') == 'hello from an unprivileged user\n'
    assert reader.cat('/meta.js') == '{"a": "b"}'
    # The user still owns its disk: root wrote into it, and only into it.
    assert os.stat(image).st_uid == site.uid


def test_qsd_on_a_qcow2_overlay(site, key):
    base = site.images.raw_fs('_base/base.raw')
    os.makedirs(os.path.join(site.instances, 'vm2'))
    overlay = site.give(site.images.qcow2_overlay(base, 'vm2/disk'))
    before = sh('sha256sum', base)
    proc = site.run('inject', overlay, '--format', 'qcow2', '--handlers',
                    'loop,qsd', '--key-file', key, '--json')
    assert proc.returncode == 0, proc.stderr
    assert '"handler": "qsd"' in proc.stdout
    assert_key(Debugfs(site.images.to_raw(overlay)))
    assert sh('sha256sum', base) == before, 'the base image was written'


def test_guestfs_appliance(site, key):
    base = site.images.raw_fs('_base/gbase.raw')
    os.makedirs(os.path.join(site.instances, 'vm3'))
    overlay = site.give(site.images.qcow2_overlay(base, 'vm3/disk'))
    proc = site.run('inject', overlay, '--format', 'qcow2', '--handlers',
                    'guestfs', '--partition', '0', '--key-file', key)
    assert proc.returncode == 0, proc.stderr
    assert 'with handler guestfs' in proc.stdout
    assert_key(Debugfs(site.images.to_raw(overlay)))


def test_through_oslo_rootwrap_with_the_shipped_filters(site, key):
    """The exact command privsep builds, admitted by our filter file."""
    conf = os.path.join(privsep_conftest.ETC, site.id + '.conf')
    rootwrap = 'sudo %s/oslo-rootwrap %s' % (site.bin,
                                             privsep_conftest.ROOTWRAP_CONF)
    site.write_conf(conf=conf, extra='[inject]\nroot_helper = %s\n'
                    % rootwrap)
    with open(conf) as f:  # no helper_command: root_helper + our helper
        lines = [line for line in f
                 if not line.startswith('helper_command = ')]
    with open(conf, 'w') as f:
        f.write(''.join(lines))
    image = site.give(site.images.raw_fs('rootwrap.raw'))
    try:
        proc = site.run('inject', image, '--format', 'raw', '--handlers',
                        'loop', '--no-cow', '--key-file', key, conf=conf)
    finally:
        os.unlink(conf)
    assert proc.returncode == 0, proc.stderr
    assert_key(Debugfs(image))


def test_image_outside_instances_path_is_refused(site, key):
    outside = os.path.join(site.dir, 'outside.raw')
    shutil.copy(site.images.raw_fs('x.raw'), outside)
    proc = site.run('inject', outside, '--format', 'raw', '--handlers',
                    'loop', '--no-cow', '--key-file', key)
    assert_one_line_error(proc, 1, 'not inside [inject] image_dirs')
    assert not Debugfs(outside).exists('/root/.ssh/authorized_keys')


def test_image_reached_through_a_symlink_is_refused(site, key):
    target = os.path.join(site.dir, 'host-file.raw')
    shutil.copy(site.images.raw_fs('y.raw'), target)
    link = os.path.join(site.instances, 'disk-link')
    os.symlink(target, link)
    proc = site.run('inject', link, '--format', 'raw', '--handlers', 'loop',
                    '--no-cow', '--key-file', key)
    assert_one_line_error(proc, 1, 'symlink')
    assert not Debugfs(target).exists('/root/.ssh/authorized_keys')


def test_widening_trusted_backing_dirs_is_refused(site, key):
    base = os.path.join(site.dir, 'elsewhere.raw')
    shutil.copy(site.images.raw_fs('z.raw'), base)
    overlay = site.give(site.images.qcow2_overlay(base, 'w.qcow2'))
    proc = site.run('inject', overlay, '--format', 'qcow2', '--handlers',
                    'qsd', '--key-file', key, '--trusted-backing-dir',
                    site.dir)
    assert_one_line_error(proc, 2, 'only root may widen them')


def test_config_the_user_could_write_is_refused(site, key):
    image = site.give(site.images.raw_fs('c.raw'))
    os.chmod(site.conf, 0o666)
    proc = site.run('inject', image, '--format', 'raw', '--handlers', 'loop',
                    '--no-cow', '--key-file', key)
    os.chmod(site.conf, 0o644)
    # The helper refuses to start: one line of its own (which privsep
    # may or may not have passed on yet when the command reports).
    assert_one_line_error(proc, 1, 'Cannot start the privileged helper')
    assert not Debugfs(image).exists('/root/.ssh/authorized_keys')


def test_without_a_sudo_rule_one_line_names_the_fix(site, key):
    image = site.give(site.images.raw_fs('s.raw'))
    site.write_conf(helper='sudo -n /bin/true-not-allowed')
    proc = site.run('inject', image, '--format', 'raw', '--handlers', 'loop',
                    '--no-cow', '--key-file', key)
    assert_one_line_error(proc, 1, 'Cannot start the privileged helper',
                          'privsep-helper through sudo')


@pytest.mark.usefixtures('ksm_saved')
def test_ksm_apply_as_the_user(site):
    site.write_conf(extra='[ksm]\nenabled = true\npolicy = static\n'
                          'pages_to_scan = 1234\nsleep_millisecs = 37\n'
                          'connection_uri =\nstate_dir = %s\n'
                    % os.path.join(site.dir, 'ksm'))
    proc = site.run('ksm', 'apply')
    assert proc.returncode == 0, proc.stderr
    assert 'KSM running' in proc.stdout
    assert ksm_conftest.read_ksm('run') == '1'
    assert ksm_conftest.read_ksm('pages_to_scan') == '1234'
    assert ksm_conftest.read_ksm('sleep_millisecs') == '37'
    proc = site.run('ksm', 'disable')
    assert proc.returncode == 0, proc.stderr
    assert ksm_conftest.read_ksm('run') == '0'


def test_base_dir_swapped_for_a_link_to_root_is_refused(site, key):
    """nova owns instances_path, so the nova user can replace _base (the
    trusted backing directory) with a symlink to /: then /etc/shadow
    would be a trusted backing file, and copy-on-write would copy host
    data into the user's overlay. Refused, whatever the backing file."""
    os.chown(site.instances, site.uid, -1)
    os.rmdir(site.base)
    os.symlink('/', site.base)
    os.lchown(site.base, site.uid, -1)
    overlay = os.path.join(site.instances, 'evil.qcow2')
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/shadow',
       '-F', 'raw', overlay, '32M')
    site.give(overlay)
    proc = site.run('inject', overlay, '--format', 'qcow2', '--handlers',
                    'qsd', '--partition', '0', '--key-file', key)
    assert_one_line_error(proc, 2, 'passes through symlink', site.base)
    assert os.path.getsize(overlay) < 1024 * 1024, 'nothing was copied'
