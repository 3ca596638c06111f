"""The host-kernel path and the filesystems of real guest images.

RHEL-family cloud images are XFS, and every overlay of one base shares the
base's filesystem UUID: XFS refuses to mount a second one while the first
is mounted, unless ``nouuid``. Two injections into two guests of one
image must both succeed while they overlap in time. btrfs clones (Linux
6.7+ gives them a temporary fsid) and ext4 are checked the same way. The
results are read back by the kernel in a read-only mount of a flattened
copy (not through any code under test), and a type outside
``[inject] allowed_filesystems`` is refused with its name.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from tests.functional.conftest import MIB
from tests.functional.conftest import sh

KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFilesystemCloneA clone@a'
KEY_B = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFilesystemCloneB clone@b'

# A guest root for mkfs.xfs's protofile (xfsprogs 6.1 cannot copy a tree).
PROTO = textwrap.dedent('''\
    /dev/null
    0 0
    d--755 0 0
    etc d--755 0 0
    passwd ---644 0 0 {tree}/etc/passwd
    shadow ---640 0 0 {tree}/etc/shadow
    $
    root d--700 0 0
    $
    $
    ''')

HOLD = textwrap.dedent('''
    import os, sys, time
    from nova_ksm_inject.cmd import common
    common.load_config([sys.argv[1]])
    from nova_ksm_inject.disk import api, inject
    written = inject.inject_data
    def held(files, request, **kwargs):
        print('mounted', flush=True)
        while not os.path.exists(sys.argv[4]):
            time.sleep(0.02)
        return written(files, request, **kwargs)
    inject.inject_data = held
    api.inject_data(sys.argv[2], inject.InjectionRequest(key=sys.argv[5]),
                    fmt='qcow2', partition=0, handler_names=['qsd'],
                    use_cow=True, trusted_dirs=[sys.argv[3]])
''')


def build_base(images, fstype):
    os.makedirs(images.path('_base'), exist_ok=True)
    path = images.path('_base/%s.raw' % fstype)
    if fstype == 'xfs':
        proto = images.path('proto')
        with open(proto, 'w') as f:
            f.write(PROTO.format(tree=images.tree))
        sh('truncate', '-s', '320M', path)  # XFS's smallest
        sh('mkfs.xfs', '-q', '-p', proto, path)
    elif fstype == 'btrfs':
        sh('truncate', '-s', '160M', path)
        sh('mkfs.btrfs', '-q', '--rootdir', images.tree, path)
    else:
        sh('mkfs.ext4', '-q', '-F', '-d', images.tree, path, '32M')
    return path


def kernel_read(images, overlay, fstype, guest_path):
    """Flatten ``overlay`` and read ``guest_path`` in a read-only mount."""
    flat = images.to_raw(overlay)
    mountpoint = flat + '.mnt'
    os.makedirs(mountpoint)
    options = 'ro,loop' + (',nouuid,norecovery' if fstype == 'xfs' else '')
    sh('mount', '-t', fstype, '-o', options, flat, mountpoint)
    try:
        with open(os.path.join(mountpoint, guest_path.lstrip('/'))) as f:
            return f.read()
    finally:
        sh('umount', mountpoint)


@pytest.mark.parametrize('fstype', ['xfs', 'btrfs', 'ext4'])
def test_two_clones_of_one_base_injected_while_overlapping(
        images, tmp_path, no_leaks, fstype):
    base = build_base(images, fstype)
    # nova's disks are nova's: qemu-storage-daemon runs as their owner.
    first = images.give(images.qcow2_overlay(base, 'a.qcow2', 'raw'))
    second = images.give(images.qcow2_overlay(base, 'b.qcow2', 'raw'))
    conf = tmp_path / 'nova.conf'
    conf.write_text('[inject]\nstate_dir = %s\n' % (tmp_path / 'state'))
    release = tmp_path / 'release'
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLD, str(conf), first,
         images.path('_base'), str(release), KEY_A],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'mounted', \
            holder.stderr.read()
        # The first clone is mounted now; the second must mount too.
        result = api.inject_data(
            second, inject.InjectionRequest(key=KEY_B), fmt='qcow2',
            partition=0, handler_names=['qsd'], use_cow=True,
            trusted_dirs=[images.path('_base')])
        assert result.injected == ['key']
    finally:
        release.touch()
        _out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    assert KEY_A in kernel_read(images, first, fstype,
                                '/root/.ssh/authorized_keys')
    assert KEY_B in kernel_read(images, second, fstype,
                                '/root/.ssh/authorized_keys')


def test_type_outside_allowed_filesystems_is_refused(images, conf,
                                                     no_leaks):
    conf.config(group='inject', allowed_filesystems=['xfs', 'btrfs'])
    image = images.raw_fs()
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(image, inject.InjectionRequest(key=KEY_A),
                        partition=0, handler_names=['loop'], use_cow=False)
    message = str(err.value)
    assert 'filesystem type ext4' in message
    assert '[inject] allowed_filesystems (xfs, btrfs)' in message
    assert os.path.getsize(image) == 32 * MIB
    proc = subprocess.run(['debugfs', '-R', 'stat /root/.ssh', image],
                          capture_output=True, text=True)
    assert 'File not found' in proc.stderr + proc.stdout
