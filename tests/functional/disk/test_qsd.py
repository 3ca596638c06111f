"""The qsd handler on real qcow2 overlays and raw images (root).

qemu-storage-daemon exports the image over FUSE, the kernel loop-mounts
the export, injection writes through it. Results are read back without
mounting: the overlay is converted to raw with qemu-img and read with
debugfs; backing files must keep their sha256. ``no_leaks`` checks that no
loop device, mount (guest or FUSE export), live qemu-storage-daemon or
journal record remains.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import export
from nova_ksm_inject.disk import inject
from tests.functional.conftest import Debugfs
from tests.functional.conftest import Images
from tests.functional.conftest import sh
from tests.functional.disk.test_loop import assert_full_injection
from tests.functional.disk.test_loop import full_request

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIQsdFunctional qsd@ci'


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def cache(images):
    """The trusted base-image directory (nova's _base)."""
    path = images.path('_base')
    os.makedirs(path)
    return path


def inject_qsd(image, request, partition, cache, **kwargs):
    kwargs.setdefault('fmt', 'qcow2')
    Images.give(image)
    return api.inject_data(image, request, partition=partition,
                           handler_names=['qsd'], use_cow=True,
                           trusted_dirs=[cache], **kwargs)


def test_overlay_on_raw_base_whole_disk(images, cache, no_leaks):
    base = images.raw_fs('_base/base.raw')
    before = sha256(base)
    overlay = images.qcow2_overlay(base, 'disk.qcow2', 'raw')
    result = inject_qsd(overlay, full_request(), 0, cache)
    assert result.handler == 'qsd'
    assert [(a.handler, a.outcome) for a in result.attempts] == [
        ('qsd', 'used')]
    assert_full_injection(Debugfs(images.to_raw(overlay)))
    assert sha256(base) == before
    assert not Debugfs(base).exists('/root/.ssh/authorized_keys')


def test_partitioned_qcow2_base_and_overlay(images, cache, no_leaks):
    raw, offset = images.raw_mbr()
    base = os.path.join(cache, 'base.qcow2')
    sh('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, base)
    before = sha256(base)
    overlay = images.qcow2_overlay(base, 'disk.qcow2', 'qcow2')
    inject_qsd(overlay, full_request(), 2, cache)
    assert_full_injection(Debugfs(images.to_raw(overlay), offset))
    assert sha256(base) == before


def test_three_layer_chain_writes_only_the_top(images, cache, no_leaks):
    base = images.raw_fs('_base/base.raw')
    mid = os.path.join(cache, 'mid.qcow2')
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw',
       mid)
    sums = {base: sha256(base), mid: sha256(mid)}
    top = images.qcow2_overlay(mid, 'disk.qcow2', 'qcow2')
    inject_qsd(top, inject.InjectionRequest(key=KEY), 0, cache)
    assert KEY in Debugfs(images.to_raw(top)).cat('/root/.ssh/'
                                                 'authorized_keys')
    assert {p: sha256(p) for p in sums} == sums


def test_raw_image_is_written_in_place(images, no_leaks):
    image = images.raw_fs()
    api.inject_data(Images.give(image), full_request(), partition=0,
                    handler_names=['qsd'], use_cow=False)
    assert_full_injection(Debugfs(image))


def test_image_is_free_as_soon_as_inject_returns(images, cache, no_leaks,
                                                 monkeypatch):
    """The daemon let go of the overlay before the journal finished: a
    second writer (qemu-img takes qemu's image lock) gets it at once, and
    the stop takes far less than the 1.2-2 s of waiting for init to reap
    a SIGTERMed daemon on this host."""
    stops = []
    real_stop = export.stop_daemon

    def timed_stop(*args, **kwargs):
        started = time.monotonic()
        real_stop(*args, **kwargs)
        stops.append(time.monotonic() - started)
    monkeypatch.setattr(export, 'stop_daemon', timed_stop)
    base = images.raw_fs('_base/base.raw')
    overlay = images.qcow2_overlay(base, 'disk.qcow2', 'raw')
    inject_qsd(overlay, inject.InjectionRequest(key=KEY), 0, cache)
    sh('qemu-img', 'info', '-f', 'qcow2', overlay)  # fails if still locked
    assert len(stops) == 1 and stops[0] < 1.0, stops
    inject_qsd(overlay, inject.InjectionRequest(key=KEY), 0, cache)
    keys = Debugfs(images.to_raw(overlay)).cat('/root/.ssh/authorized_keys')
    assert keys.count(KEY) == 1


def test_missing_partition_stops_the_daemon(images, cache, no_leaks):
    raw, _offset = images.raw_mbr('_base/mbr.raw')
    overlay = images.qcow2_overlay(raw, 'disk.qcow2', 'raw')
    with pytest.raises(exception.NoHandlerMounted) as err:
        inject_qsd(overlay, inject.InjectionRequest(key=KEY), 5, cache)
    assert 'partition 5 not found' in str(err.value)
    assert 'partitions: 1, 2' in str(err.value)


def test_failure_while_injecting_unwinds_everything(images, cache, no_leaks,
                                                    monkeypatch):
    base = images.raw_fs('_base/base.raw')
    overlay = images.qcow2_overlay(base, 'disk.qcow2', 'raw')

    def explode(files, request, image_desc='', **kwargs):
        files.makedirs('/root/.ssh', 0o700)
        raise RuntimeError('boom')
    monkeypatch.setattr(api.inject, 'inject_data', explode)
    # Whatever goes wrong, the caller gets one of our errors, unwound.
    with pytest.raises(exception.InjectionFailed, match='boom'):
        inject_qsd(overlay, inject.InjectionRequest(key=KEY), 0, cache)


KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    from nova_ksm_inject.cmd import common
    common.load_config([sys.argv[1]])
    from nova_ksm_inject.disk import api, inject
    def die(files, request, image_desc='', **kwargs):
        print('mounted', flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    api.inject.inject_data = die
    api.inject_data(sys.argv[2], inject.InjectionRequest(key='k'),
                    partition=0, handler_names=['qsd'], use_cow=True,
                    fmt='qcow2',
                    trusted_dirs=[sys.argv[3]])
''')


def live_daemons(marker):
    out = subprocess.run(['ps', '-eww', '-o', 'stat,args'],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if 'qemu-storage-daemon' in
            line and marker in line and not line.startswith('Z')]


def test_cleanup_sweeps_a_killed_run(images, cache, tmp_path, no_leaks):
    base = images.raw_fs('_base/base.raw')
    overlay = Images.give(images.qcow2_overlay(base, 'disk.qcow2', 'raw'))
    state_dir = tmp_path / 'state'
    conf = tmp_path / 'nova.conf'
    conf.write_text('[inject]\nstate_dir = %s\n' % state_dir)
    proc = subprocess.run([sys.executable, '-c', KILLED_RUN, str(conf),
                           overlay, cache], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert 'mounted' in proc.stdout
    # The sandbox died with its caller; what it leaves is mounts.
    assert not live_daemons(str(state_dir))
    cli = os.path.join(os.path.dirname(sys.executable), 'nova-ksm-inject')
    out = subprocess.run([cli, 'cleanup', '--config-file', str(conf)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for kind in ('mount', 'loop', 'fuse', 'tmpdir'):
        assert 'undone %s' % kind in out.stdout
    assert not live_daemons(str(state_dir))
    sh('qemu-img', 'info', '-f', 'qcow2', overlay)  # unlocked again
