"""``fuse2fs``: ext2/3/4 served in userspace, with no privilege at all.

The default handler. The caller (nova-compute's user, or root) runs it in
its own process: no privsep, no sudo rule, no loop device, and no host
kernel filesystem ever parses the guest's bytes. Two sandboxed helpers
(:mod:`nova_ksm_inject.disk.sandbox`) do the parsing, as an unprivileged
uid, seeing only the image files and one work directory:

* a qcow2 image (with its backing chain, each layer bound read-only and
  opened with an explicit driver) is exported as a raw disk by
  qemu-storage-daemon's FUSE export; a raw image is used as it is;
* ``fuse2fs -o offset=N,fakeroot`` serves the guest filesystem over FUSE,
  where the guest-file rules of :mod:`nova_ksm_inject.disk.files.host`
  write it (fakeroot: owners and modes are the guest's, unchanged by the
  caller's uid).

Both FUSE mounts are made by the caller and handed over as descriptors
(:mod:`nova_ksm_inject.disk.fuse`). Unmounting the guest makes fuse2fs
flush and close the filesystem and exit; qemu-storage-daemon is then
stopped through its QMP monitor, which it closes after its last image.

A root caller runs the helpers as the image's owner (nova's instance
disks belong to nova); an image that belongs to root is refused. What
fuse2fs cannot serve -- another filesystem type, a journal that needs
recovery, an external journal, features libext2fs does not know -- fails
with the reason, and the chain moves on (``guestfs``).
"""

import functools
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import fstype as fstype_mod
from nova_ksm_inject.disk import fuse
from nova_ksm_inject.disk import qmp
from nova_ksm_inject.disk import sandbox
from nova_ksm_inject.disk.files import host
from nova_ksm_inject.disk.handlers import base
from nova_ksm_inject.disk.handlers import qsd

LOG = logging.getLogger(__name__)

EXT_TYPES = ('ext2', 'ext3', 'ext4')
SECTOR = 512
#: s_feature_incompat: RECOVER (the journal needs replaying) and
#: JOURNAL_DEV (an external journal device).
_INCOMPAT_AT = 1024 + 0x60
_RECOVER, _JOURNAL_DEV = 0x4, 0x8
#: Seconds fuse2fs gets to flush and exit after its unmount.
STOP_TIMEOUT = 30


def _failed(reason, *args):
    return exception.HandlerFailed(reason=reason % args)


class Fuse2fsHandler(base.ImageHandler):
    """ext2/3/4 through fuse2fs (and qemu-storage-daemon for qcow2)."""

    cow = True
    formats = frozenset(['raw', 'qcow2'])
    can_inspect = False
    kernel_mount = False
    privileged = False

    def check_host(self):
        sandbox.check_available()
        tools = [('fuse2fs', 'fuse2fs'),
                 ('qemu-storage-daemon', 'qemu-system-common')]
        if os.geteuid() != 0:
            tools.append((fuse.FUSERMOUNT, 'fuse3'))
        for tool, package in tools:
            if not shutil.which(tool):
                raise exception.HandlerUnavailable(
                    reason='%s not found; install the Debian package %s'
                           % (tool, package))
        if not os.path.exists('/dev/fuse'):
            raise exception.HandlerUnavailable(
                reason='no /dev/fuse: the fuse driver is not loaded; run '
                       'modprobe fuse')

    def mount(self, image, partition, journal):
        if partition < 0:
            raise _failed('fuse2fs cannot inspect %s for its root '
                          'partition; give the partition number', image.path)
        ids = _helper_ids(image)
        workdir = journal.make_dir('fuse2fs')
        if image.format == 'qcow2':
            disk = self._export(image, workdir, ids, journal)
        else:
            disk = image.tool_path
        with _opened(disk) as disk_fd:
            offset = self._offset(disk_fd, partition, image, workdir, ids)
            _check_filesystem(disk, offset, image.path)
            root = self._serve(disk_fd, offset, image, workdir, ids,
                               journal)
        files = host.HostRootFiles(root)
        journal.callback(files.close)
        return files

    # -- qemu-storage-daemon ------------------------------------------------

    def _export(self, image, workdir, ids, journal):
        export = os.path.join(workdir, 'export.raw')
        with open(export, 'x'):
            pass
        fuse_fd = fuse.mount(export, 'qsd', share=os.geteuid() == 0)
        journal.push('fuse', path=export)
        monitor, theirs = socket.socketpair()
        box = sandbox.Sandbox(self.conf, workdir, *ids)
        try:
            cmd = _qsd_command(box, image, box.pass_fd(theirs.fileno()))
            box.data_file(b'', '/export.raw', 0o600)
            box.fuse_server(fuse_fd)
            proc = box.start(*cmd)
        finally:
            os.close(fuse_fd)
            theirs.close()
        journal.push('process', undo_now=functools.partial(
            _stop_qsd, proc, monitor), pid=proc.pid, marker=workdir,
            timeout=qsd.STOP_TIMEOUT)
        self._wait_export(image, export, proc)
        return export

    def _wait_export(self, image, export, proc):
        def ready():
            return os.stat(export).st_size == image.virtual_size
        if not _wait(ready, proc, self.conf.inject.device_timeout):
            raise _failed('qemu-storage-daemon did not export %s within %d '
                          's ([inject] device_timeout): %s', image.path,
                          self.conf.inject.device_timeout, _said(proc))
        LOG.debug('qemu-storage-daemon %d exports %s', proc.pid, image.path)

    # -- the partition and the filesystem -----------------------------------

    def _offset(self, disk_fd, partition, image, workdir, ids):
        if partition == 0:
            return 0
        box = sandbox.Sandbox(self.conf, workdir, *ids)
        try:
            out, _err = box.run(
                'partx', '--show', '--noheadings', '--output',
                'NR,START,SECTORS', box.pass_fd(disk_fd),
                action='reading the partition table of %s' % image.path)
        except exception.CommandFailed as err:
            raise _failed('no partition table readable in %s (%s); set '
                          '--partition 0 for a whole-disk filesystem',
                          image.path, err) from err
        table = _partition_table(out)
        if partition not in table:
            raise _failed('partition %d not found in %s (partitions: %s); '
                          'set --partition or [libvirt] inject_partition to '
                          'one of them', partition, image.path,
                          ', '.join(str(n) for n in sorted(table)) or 'none')
        return table[partition]

    # -- fuse2fs --------------------------------------------------------------

    def _serve(self, disk_fd, offset, image, workdir, ids, journal):
        root = journal.make_dir('root')
        fuse_fd = fuse.mount(root, 'fuse2fs')
        box = sandbox.Sandbox(self.conf, workdir, *ids)
        try:
            disk = box.pass_fd(disk_fd)
            box.directory('/image/root')
            box.fuse_server(fuse_fd)
            proc = box.start('fuse2fs', disk, '/image/root', '-f',
                             '-o', 'offset=%d,fakeroot' % offset)
        finally:
            os.close(fuse_fd)
        journal.push('fuse', undo_now=functools.partial(
            _stop_fuse2fs, proc, root, image.path), path=root)
        served = _wait(lambda: os.stat(root) is not None, proc,
                       self.conf.inject.device_timeout)
        if not served:
            raise _failed('fuse2fs could not serve the filesystem of %s: '
                          '%s', image.path, _said(proc))
        LOG.info('fuse2fs %d serves %s (offset %d) at %s', proc.pid,
                 image.path, offset, root)
        return root


def _helper_ids(image):
    """``(uid, gid)`` the helpers run as: the caller's own, or for root the
    image's owner (never root)."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    info = os.stat(image.tool_path)
    if info.st_uid == 0:
        raise _failed('%s belongs to root, and fuse2fs never runs its '
                      'helpers as root; give the image to the user '
                      'nova-compute runs as (chown nova), or use another '
                      'handler', image.path)
    return info.st_uid, info.st_gid


class _opened:
    """A read-only descriptor of ``path``, closed on exit."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def __enter__(self):
        return self.fd

    def __exit__(self, *exc):
        os.close(self.fd)


def _qsd_command(box, image, monitor):
    """qemu-storage-daemon's command line, every layer handed to ``box``
    as a descriptor: the top one writable, the backing ones read-only,
    each with its format (:func:`qsd.layer_spec`)."""
    args, below = [], None
    layers = image.layer_paths()
    for depth, (path, fmt) in reversed(list(enumerate(layers, 1))):
        with _opened(path) as fd:
            node = 'backing%d' % depth
            args += ['--blockdev', json.dumps(qsd.layer_spec(
                node, box.pass_fd(fd), fmt, below, read_only=True))]
        below = node
    with _opened(image.tool_path) as fd:
        args += ['--blockdev', json.dumps(qsd.layer_spec(
            'top', box.pass_fd(fd), image.format, below, read_only=False))]
    export = {'type': 'fuse', 'id': qsd.EXPORT_ID, 'node-name': 'top',
              'mountpoint': '/export.raw', 'writable': True,
              'allow-other': 'off'}
    return ['qemu-storage-daemon', *args, '--export', json.dumps(export),
            '--chardev', 'socket,id=%s,fd=%s' % (
                qsd.MONITOR_ID, monitor.rsplit('/', 1)[1]),
            '--monitor', 'chardev=%s' % qsd.MONITOR_ID]


def _partition_table(out):
    """``{number: offset in bytes}`` from ``partx --show`` output."""
    table = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            table[int(fields[0])] = int(fields[1]) * SECTOR
    return table


def _check_filesystem(disk, offset, image_path):
    """Refuse what fuse2fs cannot serve safely, naming it."""
    fstype = fstype_mod.detect(disk, offset=offset)
    if fstype not in EXT_TYPES:
        raise _failed('%s holds %s at offset %d; fuse2fs serves ext2/3/4 '
                      'only', image_path, fstype or 'no filesystem '
                      'recognised', offset)
    with open(disk, 'rb') as f:
        f.seek(offset + _INCOMPAT_AT)
        incompat, = struct.unpack('<I', f.read(4))
    if incompat & _RECOVER:
        raise _failed('the %s filesystem of %s needs journal recovery (the '
                      'guest was not shut down cleanly), which fuse2fs '
                      'cannot replay', fstype, image_path)
    if incompat & _JOURNAL_DEV:
        raise _failed('%s is an external ext journal, not a filesystem',
                      image_path)


def _wait(ready, proc, timeout):
    """Run ``ready()`` (it may block on a FUSE mount until its server
    answers) until it holds, bounded by ``timeout``; False when the helper
    died first or the time ran out (the helper is then killed, which ends
    any blocked call)."""
    outcome = []

    def probe():
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if ready():
                    outcome.append(True)
                    return
            except OSError:
                pass
            time.sleep(0.002)
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or not outcome:
        _kill(proc)
        thread.join()
    return bool(outcome)


def _kill(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _said(proc):
    """The helper's last line on stderr, once it has exited."""
    _kill(proc)
    lines = [line for line in os.fsdecode(proc.stderr.read()).splitlines()
             if line.strip() and 'journal is not supported' not in line]
    proc.stderr.close()
    return utils.last_line('\n'.join(lines)) if lines else \
        'exit status %s' % proc.returncode


def _stop_fuse2fs(proc, root, image_path):
    """Unmount the guest; fuse2fs then flushes, closes and exits."""
    fuse.unmount(root)
    try:
        code = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise exception.NovaKsmInjectError(
            'fuse2fs serving %s did not exit within %d s of its unmount; '
            'killed it, the writes may be lost' % (image_path, STOP_TIMEOUT))
    finally:
        proc.stderr.close()
    if code != 0:
        raise exception.NovaKsmInjectError(
            'fuse2fs serving %s exited %d after its unmount; the writes may '
            'not all have reached the image' % (image_path, code))


def _stop_qsd(proc, monitor):
    """QMP ``quit`` (qemu flushes and closes every image), then reap."""
    if proc.poll() is None:
        try:
            with qmp.QmpClient('qemu-storage-daemon %d' % proc.pid,
                               timeout=qsd.STOP_TIMEOUT,
                               sock=monitor) as client:
                client.quit()
        except (OSError, qmp.QmpError) as err:
            LOG.warning('qemu-storage-daemon %d did not quit through QMP '
                        '(%s); killing it', proc.pid, err)
    try:
        proc.wait(qsd.STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    _kill(proc)
    proc.stderr.close()
