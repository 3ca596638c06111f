"""The nbd handler on this host, for real (root).

This machine has no nbd driver (no /sys/module/nbd, no /dev/nbd*), so the
only nbd path that can run here is the one a compute node without the
module takes: nbd says why in one line, with the fix, and the chain moves
on to the next copy-on-write handler. Device allocation, locking, the
connection wait and disconnects need a kernel nbd device and are covered
on a fake sysfs in tests/unit/disk/handlers/test_nbd.py.
"""

import os
import subprocess
import sys

import pytest

from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from tests.functional.conftest import Debugfs

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINbdFallsThrough nbd@ci'
REASON = ('no nbd driver: /dev/nbd0 missing; load it with modprobe nbd '
          'max_part=16')
CLI = os.path.join(os.path.dirname(sys.executable), 'nova-ksm-inject')

pytestmark = pytest.mark.skipif(
    os.path.exists('/sys/block/nbd0'),
    reason='this host has an nbd driver: nbd would not fall through')


@pytest.fixture
def overlay(images):
    os.makedirs(images.path('_base'))
    base = images.raw_fs('_base/base.raw')
    # nova's disks are nova's: qsd's helpers run as the owner, never root.
    return images.give(images.qcow2_overlay(base, 'disk.qcow2', 'raw'))


def test_nbd_falls_through_to_qsd(images, overlay, no_leaks):
    result = api.inject_data(overlay, inject.InjectionRequest(key=KEY),
                             partition=0, handler_names=['nbd', 'qsd'],
                             use_cow=True, fmt='qcow2',
                             trusted_dirs=[images.path('_base')])
    assert result.handler == 'qsd'
    nbd, used = result.attempts
    assert (nbd.handler, nbd.outcome, nbd.reason) == ('nbd', 'unavailable',
                                                      REASON)
    assert (used.handler, used.outcome) == ('qsd', 'used')
    assert KEY in Debugfs(images.to_raw(overlay)).cat(
        '/root/.ssh/authorized_keys')


def write_conf(tmp_path, handlers):
    conf = tmp_path / 'nova.conf'
    conf.write_text('[DEFAULT]\nimg_handlers = %s\nuse_cow_images = True\n'
                    '[inject]\nstate_dir = %s\ntrusted_backing_dirs = %s\n'
                    '[guestfs]\nbackend_settings = force_tcg\n'
                    % (handlers, tmp_path / 'state', tmp_path / '_base'))
    return str(conf)


def test_operator_sees_why_nbd_was_passed_over(images, overlay, tmp_path,
                                               no_leaks):
    """The README demo: img_handlers = qsd,nbd,guestfs lists nbd's reason;
    with nbd first, the inject command and its log show it and qsd works."""
    conf = write_conf(tmp_path, 'qsd,nbd,guestfs')
    proc = subprocess.run([CLI, 'handlers', '--config-file', conf],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    nbd_line = [line for line in proc.stdout.splitlines() if ' nbd ' in line]
    assert len(nbd_line) == 1 and 'UNAVAILABLE' in nbd_line[0]
    assert REASON in nbd_line[0]
    key = tmp_path / 'key.pub'
    key.write_text(KEY + '\n')
    conf = write_conf(tmp_path, 'nbd,qsd')
    proc = subprocess.run([CLI, 'inject', overlay, '--format', 'qcow2',
                           '--config-file', conf, '--partition', '0',
                           '--key-file', str(key)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert 'Image handler nbd is unavailable on this host: %s' % REASON \
        in output  # the log line
    assert 'Injected key with handler qsd' in proc.stdout
