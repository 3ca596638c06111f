"""Real guest disks for the API tests, and an independent reader of them.

Images are built without mounting (qemu-img, sfdisk, mkfs.ext4 -d) and
read back without mounting (qemu-img convert, then debugfs at the
partition's offset), so nothing of the code under test verifies itself.
"""

import os
import subprocess

MIB = 1024 * 1024
#: Partition 1 starts at sector 2048, as fdisk and cloud images place it.
PARTITION_OFFSET = MIB

PASSWD = 'root:x:0:0:root:/root:/bin/sh\nlab:x:1000:1000::/home/lab:/bin/sh\n'
SHADOW = 'root:*:19000:0:99999:7:::\nlab:!:19000:0:99999:7:::\n'


def run(*cmd, data=None):
    proc = subprocess.run([str(c) for c in cmd], input=data,
                          capture_output=True)
    assert proc.returncode == 0, '%s failed: %s' % (cmd, proc.stderr)
    return proc.stdout


def _tree(directory):
    files = {'etc/passwd': (PASSWD, 0o644), 'etc/shadow': (SHADOW, 0o640),
             'etc/os-release': ('ID=debian\nVERSION_ID="12"\n', 0o644),
             'etc/network/interfaces': ('auto lo\niface lo inet loopback\n',
                                        0o644)}
    for rel, (text, mode) in files.items():
        path = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, mode)
    os.makedirs(os.path.join(directory, 'root'), mode=0o700, exist_ok=True)
    return directory


def partitioned_guest(directory, size_mib=32, filesystem=True):
    """A raw disk with an MBR table and partition 1 from 1 MiB to the end,
    holding an ext4 filesystem with a minimal Linux tree (or, with
    ``filesystem=False``, nothing any handler can mount)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'disk.raw')
    run('qemu-img', 'create', '-q', '-f', 'raw', path, '%dM' % size_mib)
    run('sfdisk', '-q', path, data=b'label: dos\n2048,,L\n')
    if filesystem:
        tree = _tree(os.path.join(directory, 'tree'))
        run('mkfs.ext4', '-q', '-F', '-d', tree, '-E',
            'offset=%d' % PARTITION_OFFSET, path,
            '%dk' % ((size_mib * MIB - PARTITION_OFFSET) // 1024))
    return path


class GuestDisk(object):
    """A qcow2 overlay, flattened to raw and read with debugfs."""

    def __init__(self, overlay, workdir):
        self.overlay = overlay
        self.flat = os.path.join(workdir, os.path.basename(
            os.path.dirname(overlay)) + '.flat')
        run('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', overlay,
            self.flat)
        self.spec = '%s?offset=%d' % (self.flat, PARTITION_OFFSET)

    def info(self):
        return run('qemu-img', 'info', '-f', 'qcow2', self.overlay).decode()

    def cat(self, path):
        return run('debugfs', '-R', 'cat %s' % path, self.spec).decode()

    def exists(self, path):
        proc = subprocess.run(['debugfs', '-R', 'stat %s' % path, self.spec],
                              capture_output=True, text=True)
        return 'File not found' not in proc.stderr + proc.stdout

    def root_hash(self):
        """The password field of root's /etc/shadow entry."""
        return self.cat('/etc/shadow').split('\n')[0].split(':')[1]
