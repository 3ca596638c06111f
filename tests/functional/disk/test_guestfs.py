"""The guestfs handler with a real libguestfs appliance (root, TCG).

Each appliance launch costs 11-15 s on this machine, so there are four:
the Python binding inspecting a partitioned qcow2 overlay and writing
everything plus hostile paths into it; the command line reaching guestfs
after nbd fails (the README demo); the guestmount fallback; and a launch
cut short by launch_timeout. Results are read back with qemu-img convert
+ debugfs; backing files keep their sha256; ``no_leaks`` checks that no
qemu, guestmount, mount or journal record remains.
"""

import os
import subprocess
import sys
import time

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import guestfs
from tests.functional.conftest import build_tree
from tests.functional.conftest import Debugfs
from tests.functional.conftest import sh
from tests.functional.disk.test_loop import assert_full_injection
from tests.functional.disk.test_loop import full_request
from tests.functional.disk.test_qsd import sha256

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuestfsFunctional gfs@ci'
CLI = os.path.join(os.path.dirname(sys.executable), 'nova-ksm-inject')
NBD_REASON = ('no nbd driver: /dev/nbd0 missing; load it with modprobe nbd '
              'max_part=16')
MIB = 1024 * 1024
P1, P2 = 2048 * 512, (2048 + 16384) * 512  # partition offsets (bytes)

pytestmark = pytest.mark.skipif(
    guestfs.load_binding() is None,
    reason='the libguestfs Python binding (Debian python3-guestfs) is not '
           'importable; run tools/link-guestfs for this venv')


@pytest.fixture(autouse=True)
def appliance_env(monkeypatch, state_conf):
    # KVM here aborts qemu: the appliance must run under TCG.
    monkeypatch.setenv('LIBGUESTFS_BACKEND', 'direct')
    state_conf.config(group='guestfs', backend='direct',
                      backend_settings=['force_tcg'])


def two_partition_disk(images, root_tree, boot_tree):
    """MBR disk: p1 = /boot (8 MiB ext4), p2 = / (ext4), as a qcow2 base
    in the trusted directory with an overlay on top."""
    os.makedirs(images.path('_base'))
    raw = images.path('disk.raw')
    sh('qemu-img', 'create', '-q', '-f', 'raw', raw, '48M')
    sh('sfdisk', '-q', raw, input='label: dos\n2048,16384,L\n,,L\n')
    sh('mkfs.ext4', '-q', '-F', '-d', boot_tree, '-E', 'offset=%d' % P1, raw,
       '8M')
    sh('mkfs.ext4', '-q', '-F', '-d', root_tree, '-E', 'offset=%d' % P2, raw,
       '%dk' % ((48 * MIB - P2) // 1024))
    base = images.path('_base/base.qcow2')
    sh('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, base)
    return base, images.qcow2_overlay(base, 'disk.qcow2', 'qcow2')


def os_tree(images, name, extra=None):
    """A guest root libguestfs inspection recognises as Debian, with /boot
    on partition 1 in its fstab."""
    files = {'etc/fstab': '/dev/sda2 / ext4 defaults 0 1\n'
                          '/dev/sda1 /boot ext4 defaults 0 2\n',
             'etc/os-release': 'ID=debian\nNAME="Debian GNU/Linux"\n'
                               'VERSION_ID="12"\n',
             'etc/debian_version': '12.0\n', 'bin/.keep': '',
             'boot/.keep': ''}
    files.update(extra or {})
    return build_tree(images.path(name), files)


def test_binding_inspects_and_injects_into_the_guest_never_the_host(
        images, tmp_path, state_conf, no_leaks):
    """Inspection finds / on p2 and mounts /boot from p1 as the guest's
    fstab says; full injection; hostile paths (CVE-2012-3360/3361): an
    absolute and a climbing symlink to a directory that also exists on the
    host, ``..`` above the root, and a symlinked target file."""
    state_conf.config(group='guestfs', interface='binding')
    host_dir = str(tmp_path / 'host-escape')
    os.makedirs(host_dir)
    tree = os_tree(images, 'hostile-tree', {
        host_dir.lstrip('/') + '/.keep': '', 'hostile/.keep': ''})
    os.symlink(host_dir, os.path.join(tree, 'hostile/abs'))
    os.symlink('../' * 12 + host_dir.lstrip('/'),
               os.path.join(tree, 'hostile/up'))
    os.symlink('/etc/shadow', os.path.join(tree, 'etc/issue'))
    boot = images.path('boot-tree')
    os.makedirs(boot)
    base, overlay = two_partition_disk(images, tree, boot)
    before = sha256(base)
    info = disk_image.inspect_image(overlay, fmt='qcow2',
                                    trusted_dirs=[images.path('_base')])
    handler = guestfs.GuestfsHandler(state_conf.conf)
    with state.Journal(state_conf.conf.inject.state_dir, overlay,
                       'guestfs') as journal:
        files = handler.mount(info, -1, journal)
        inject.inject_data(files, full_request(), image_desc=overlay)
        files.write('/boot/note', b'on /boot\n')
        files.write('/hostile/abs/via-abs', b'abs\n')
        files.write('/hostile/up/via-up', b'up\n')
        files.write('/../../../etc/dotdot', b'dotdot\n')
        with pytest.raises(exception.GuestPathRefused, match='symbolic'):
            files.write('/etc/issue', b'owned\n')
    flat = images.to_raw(overlay)
    guest = Debugfs(flat, P2)
    assert_full_injection(guest)
    assert Debugfs(flat, P1).cat('/note') == 'on /boot\n'
    assert not guest.exists('/boot/note')
    assert guest.cat(host_dir + '/via-abs') == 'abs\n'
    assert guest.cat(host_dir + '/via-up') == 'up\n'
    assert guest.cat('/etc/dotdot') == 'dotdot\n'
    assert os.listdir(host_dir) == []  # nothing reached the host
    assert sha256(base) == before


def test_guestfs_after_nbd_fails_through_the_command(images, tmp_path,
                                                     no_leaks):
    """The README demo, img_handlers = nbd,guestfs: nbd's reason is shown
    by `handlers` and logged by `inject`, and guestfs injects."""
    base, overlay = two_partition_disk(images, os_tree(images, 'root'),
                                       images.tree)
    before = sha256(base)
    conf = tmp_path / 'nova.conf'
    conf.write_text('[DEFAULT]\nimg_handlers = nbd,guestfs\n'
                    'use_cow_images = True\n[inject]\nstate_dir = %s\n'
                    'trusted_backing_dirs = %s\n[guestfs]\n'
                    'backend_settings = force_tcg\n'
                    % (tmp_path / 'state', images.path('_base')))
    shown = subprocess.run([CLI, 'handlers', '--config-file', str(conf)],
                           capture_output=True, text=True)
    assert NBD_REASON in shown.stdout
    assert [line for line in shown.stdout.splitlines()
            if 'guestfs' in line and 'usable' in line]
    (tmp_path / 'key.pub').write_text(KEY + '\n')
    proc = subprocess.run([CLI, 'inject', overlay, '--format', 'qcow2',
                           '--config-file', str(conf), '--partition', '2',
                           '--key-file',
                           str(tmp_path / 'key.pub')],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    assert 'Image handler nbd is unavailable on this host: %s' % NBD_REASON \
        in log
    assert 'Injected key with handler guestfs' in proc.stdout
    flat = images.to_raw(overlay)
    assert KEY in Debugfs(flat, P2).cat('/root/.ssh/authorized_keys')
    assert sha256(base) == before


def wait_reaped(name, timeout=10):
    """This host's PID 1 reaps orphans only every ~2 s: wait for it, so
    that an exited guestmount daemon is not counted as a leak."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(['ps', '-eo', 'stat,comm'], capture_output=True,
                             text=True).stdout
        if not any(line.split()[1:] == [name] for line in out.splitlines()):
            return
        time.sleep(0.1)


def test_guestmount_fallback(images, state_conf, no_leaks):
    state_conf.config(group='guestfs', interface='guestmount')
    os.makedirs(images.path('_base'))
    base = images.raw_fs('_base/base.raw')
    before = sha256(base)
    overlay = images.qcow2_overlay(base, 'disk.qcow2', 'raw')
    result = api.inject_data(overlay, full_request(), partition=0,
                             handler_names=['guestfs'], use_cow=True,
                             fmt='qcow2',
                             trusted_dirs=[images.path('_base')])
    assert result.handler == 'guestfs'
    # The journal waited for the guestmount process to exit: it is gone
    # or a zombie by now, never still running.
    out = subprocess.run(['ps', '-eo', 'stat,args'], capture_output=True,
                         text=True).stdout
    assert not [line for line in out.splitlines()
                if 'guestmount' in line and not line.startswith('Z')]
    assert_full_injection(Debugfs(images.to_raw(overlay)))
    assert sha256(base) == before
    wait_reaped('guestmount')


def test_appliance_that_does_not_come_up_in_time_falls_through(
        images, state_conf, no_leaks):
    state_conf.config(group='guestfs', interface='binding', launch_timeout=5)
    os.makedirs(images.path('_base'))
    base = images.raw_fs('_base/base.raw')
    overlay = images.give(images.qcow2_overlay(base, 'disk.qcow2', 'raw'))
    started = time.monotonic()
    result = api.inject_data(overlay, inject.InjectionRequest(key=KEY),
                             partition=0, handler_names=['guestfs', 'qsd'],
                             use_cow=True, fmt='qcow2',
                             trusted_dirs=[images.path('_base')])
    first = result.attempts[0]
    if first.outcome == 'used':
        pytest.skip('the appliance came up within 5 s on this host; the '
                    'timeout path cannot be reached')
    assert (first.handler, first.outcome) == ('guestfs', 'failed')
    assert 'did not come up within 5 s' in first.reason
    assert 'force_tcg' in first.reason
    assert result.handler == 'qsd'
    assert time.monotonic() - started < 5 + guestfs.KILL_GRACE
    assert KEY in Debugfs(images.to_raw(overlay)).cat(
        '/root/.ssh/authorized_keys')
