"""qemu-storage-daemon's FUSE export, without qemu, FUSE or bubblewrap.

Layers are small files of ours handed over as descriptors and read back
through them; the daemon is a stand-in speaking QMP over its end of the
socketpair (:mod:`tests.unit.disk.fakes_qmp`). The real daemon and
mounts are exercised in tests/functional/disk/test_qsd.py.
"""

import json
import os
import socket
import time

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import export
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import sandbox
from nova_ksm_inject.disk import state
from tests.unit.disk import fakes_qmp


@pytest.fixture
def helpers(tmp_path, monkeypatch, conf):
    helpers = fakes_qmp.Helpers(tmp_path, monkeypatch, conf.conf)
    yield helpers
    helpers.close()


@pytest.fixture
def chain(tmp_path):
    """A qcow2 overlay on a qcow2 on a raw file, each a file of its own
    bytes, inspected as held descriptors: its sources. The paths hold
    other bytes (what a swap after inspection would put there)."""
    layers = {}
    for name in ('top', 'mid', 'root'):
        layers[name] = tmp_path / ('held-' + name)
        layers[name].write_bytes(name.encode())
        (tmp_path / name).write_bytes(b'swapped')
    return disk_image.ImageInfo(
        str(tmp_path / 'top'), 'qcow2', 4096,
        ((str(tmp_path / 'mid'), 'qcow2'), (str(tmp_path / 'root'), 'raw')),
        source=str(layers['top']),
        backing_sources=(str(layers['mid']), str(layers['root'])))


def read_fd(fd):
    return os.pread(fd, 100, 0)


def decoded(args):
    assert args[::2] == ['--blockdev'] * (len(args) // 2)
    return [json.loads(arg) for arg in args[1::2]]


# -- one layer ----------------------------------------------------------------

def test_qcow2_layer_states_its_driver_and_no_backing():
    assert export.layer_spec('top', '/proc/self/fd/5', 'qcow2', None,
                             read_only=False) == {
        'driver': 'qcow2', 'node-name': 'top', 'read-only': False,
        'backing': None,
        'file': {'driver': 'file', 'filename': '/proc/self/fd/5',
                 'read-only': False}}
    # null, not absent: absent makes qemu open the header's backing file.
    assert '"backing": null' in json.dumps(export.layer_spec(
        'n', '/p', 'qcow2', None, read_only=True))


def test_qcow2_layer_names_the_node_below():
    spec = export.layer_spec('top', '/p', 'qcow2', 'backing1', True)
    assert spec['backing'] == 'backing1'
    assert spec['read-only'] is spec['file']['read-only'] is True


def test_raw_layer_has_no_backing_key():
    spec = export.layer_spec('backing2', '/p', 'raw', None, read_only=True)
    assert spec['driver'] == 'raw' and 'backing' not in spec


def test_raw_layer_with_a_backing_file_is_a_programming_error():
    with pytest.raises(ValueError):
        export.layer_spec('n', '/x.raw', 'raw', 'below', read_only=True)


# -- the chain ----------------------------------------------------------------

def test_chain_is_handed_over_bottom_first_top_writable(chain):
    handed = []

    def hand_over(fd):
        handed.append(read_fd(fd))
        return 'fd:%d' % len(handed)
    args, top = export.blockdev_args(chain, hand_over)
    assert handed == [b'root', b'mid', b'top']
    assert top == 'top'
    assert [(s['node-name'], s['driver'], s['file']['filename'],
             s['read-only'], s['file']['read-only'], s.get('backing', '-'))
            for s in decoded(args)] == [
        ('backing2', 'raw', 'fd:1', True, True, '-'),
        ('backing1', 'qcow2', 'fd:2', True, True, 'backing2'),
        ('top', 'qcow2', 'fd:3', False, False, 'backing1')]


def test_our_descriptors_are_closed_once_handed_over(chain):
    handed = []
    export.blockdev_args(chain, lambda fd: handed.append(fd) or 'p')
    assert len(handed) == 3
    for fd in handed:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_raw_image_is_one_writable_raw_node(tmp_path):
    path = tmp_path / 'disk.raw'
    path.write_bytes(b'raw disk')
    image = disk_image.ImageInfo(str(path), 'raw', 8)  # no holder: its path
    handed = []
    args, top = export.blockdev_args(
        image, lambda fd: handed.append(read_fd(fd)) or '/proc/self/fd/9')
    assert handed == [b'raw disk']
    assert decoded(args) == [export.layer_spec(
        'top', '/proc/self/fd/9', 'raw', None, read_only=False)]


def test_lone_qcow2_never_opens_a_header_backing_file(tmp_path):
    path = tmp_path / 'flat.qcow2'
    path.write_bytes(b'')
    image = disk_image.ImageInfo(str(path), 'qcow2', 2 ** 20)
    specs = decoded(export.blockdev_args(image, lambda fd: 'p')[0])
    assert len(specs) == 1 and specs[0]['backing'] is None


# -- the command line ---------------------------------------------------------

@pytest.fixture
def box(conf, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    box = sandbox.Sandbox(conf.conf, '/state/work/1-abc')
    yield box
    box.close()


def handed_fd(path):
    assert path.startswith('/proc/self/fd/')
    return int(path.rsplit('/', 1)[1])


def test_daemon_command_opens_only_handed_descriptors(chain, box, tmp_path):
    monitor, theirs = socket.socketpair()
    with monitor, theirs:
        cmd = export.daemon_command(chain, box, theirs.fileno())
        assert cmd[0] == 'qemu-storage-daemon'
        # No host path: the daemon resolves none, in a sandbox with none.
        for arg in cmd:
            assert str(tmp_path) not in arg
        blockdevs = [json.loads(cmd[i + 1]) for i, arg in enumerate(cmd)
                     if arg == '--blockdev']
        assert [read_fd(handed_fd(s['file']['filename']))
                for s in blockdevs] == [b'root', b'mid', b'top']

        spec = json.loads(cmd[cmd.index('--export') + 1])
        assert spec == {'type': 'fuse', 'id': export.EXPORT_ID,
                        'node-name': 'top', 'mountpoint': '/export.raw',
                        'writable': True, 'allow-other': 'off'}

        chardev = cmd[cmd.index('--chardev') + 1].split(',')
        assert chardev[:2] == ['socket', 'id=%s' % export.MONITOR_ID]
        fd = int(chardev[2].removeprefix('fd='))
        assert chardev[2] == 'fd=%d' % fd and len(chardev) == 3
        assert cmd[cmd.index('--monitor') + 1] == (
            'chardev=%s' % export.MONITOR_ID)
        # The descriptor the daemon gets is our monitor's peer.
        os.write(fd, b'hello')
        assert monitor.recv(5) == b'hello'
        # ... a copy the sandbox holds until the helper has it.
        box.close()
        with pytest.raises(OSError):
            os.fstat(fd)


# -- stopping the daemon ------------------------------------------------------

def daemon(helpers, tmp_path, mode):
    """A stand-in daemon; its monitor, and the file logging its commands."""
    monitor, theirs = socket.socketpair()
    log = tmp_path / 'qmp.log'
    log.write_text('')
    with theirs:
        proc = helpers.python(fakes_qmp.QMP_DAEMON, mode, str(log),
                              fds=[theirs.fileno()])
    while not log.read_text():  # up: short timeouts are then enough
        time.sleep(0.002)
    return proc, monitor, log


def test_stop_daemon_quits_through_qmp_and_reaps(helpers, tmp_path, caplog):
    proc, monitor, log = daemon(helpers, tmp_path, 'obey')
    started = time.monotonic()
    export.stop_daemon(proc, monitor)
    assert time.monotonic() - started < 3
    assert log.read_text().split() == ['up', 'qmp_capabilities', 'quit']
    assert proc.returncode == 0  # it exited by itself
    assert monitor.fileno() == -1
    assert 'did not quit' not in caplog.text


def test_stop_daemon_unmounts_the_export_before_quit(helpers, tmp_path,
                                                     monkeypatch):
    """Unmounted first, libfuse in the daemon finds the connection gone
    and does not start the fusermount3 stand-in on quit."""
    proc, monitor, log = daemon(helpers, tmp_path, 'obey')
    order = []
    monkeypatch.setattr(export.fuse, 'unmount', lambda path: order.append(
        (path, log.read_text().split())))
    export.stop_daemon(proc, monitor, '/work/export.raw')
    assert order == [('/work/export.raw', ['up'])]
    assert log.read_text().split() == ['up', 'qmp_capabilities', 'quit']


@pytest.mark.parametrize('mode', ['ignore', 'mute'])
def test_stop_daemon_kills_a_daemon_that_does_not_quit(helpers, tmp_path,
                                                       monkeypatch, mode):
    monkeypatch.setattr(export, 'STOP_TIMEOUT', 0.2)
    proc, monitor, log = daemon(helpers, tmp_path, mode)
    export.stop_daemon(proc, monitor)
    assert proc.returncode == -9 and proc.stdout.closed
    if mode == 'ignore':
        assert log.read_text().split() == ['up', 'qmp_capabilities', 'quit']


def test_a_daemon_killed_for_want_of_a_quit_is_a_warning(
        helpers, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(export, 'STOP_TIMEOUT', 0.2)
    proc, monitor, _log = daemon(helpers, tmp_path, 'mute')
    export.stop_daemon(proc, monitor)
    assert ('qemu-storage-daemon %d did not quit through QMP' % proc.pid
            in caplog.text)


def test_a_killed_daemons_monitor_descriptor_is_closed(helpers, tmp_path,
                                                       monkeypatch, caplog):
    monkeypatch.setattr(export, 'STOP_TIMEOUT', 0.2)
    proc, monitor, _log = daemon(helpers, tmp_path, 'ignore')
    export.stop_daemon(proc, monitor)
    assert caplog.records  # kept, as a log handler may
    assert monitor.fileno() == -1


def test_stop_daemon_of_an_exited_daemon_only_reaps(helpers, tmp_path,
                                                    caplog):
    monitor, theirs = socket.socketpair()
    with theirs:
        proc = helpers.python('pass', fds=[theirs.fileno()])
    proc.wait(10)
    export.stop_daemon(proc, monitor)
    assert proc.returncode == 0
    assert 'did not quit' not in caplog.text
    assert monitor.fileno() == -1 and proc.stdout.closed


# -- the export ---------------------------------------------------------------

class Export:
    """export_image with fuse.mount and Sandbox.start standing in.

    The mount hands back a descriptor of /dev/null; the daemon is run in
    the very sandbox built for it (options ignored by the stand-in bwrap)
    as ``daemon`` (a command), after the export is made to show the
    image's size unless ``comes_up`` is false.
    """

    def __init__(self, helpers, monkeypatch, daemon=('sleep', '30'),
                 comes_up=True):
        self.mounts, self.boxes, self.stopped = [], [], []
        self.fuse_fds = []
        real_start, real_init = sandbox.Sandbox.start, sandbox.Sandbox.__init__

        def mount(path, fstype, share=False):
            self.mounts.append((path, fstype, share))
            self.fuse_fds.append(os.open(os.devnull, os.O_RDWR))
            return self.fuse_fds[-1]

        def init(box, conf, marker, uid=None, gid=None):
            self.boxes.append({'marker': marker, 'ids': (uid, gid)})
            real_init(box, conf, marker, uid, gid)

        def start(box, *cmd):
            self.boxes[-1].update(cmd=list(cmd), argv=box.command(*cmd))
            self.boxes[-1]['qmp'] = self._greet(cmd)
            if comes_up:
                os.truncate(self.mounts[-1][0], 4096)
            proc = real_start(box, *daemon)
            helpers.started.append(proc)
            return proc

        def stop(proc, monitor, path=None):
            self.stopped.append((proc, monitor.recv(5)))
            self.unmounted_first = path
            sandbox.kill(proc)
            monitor.close()
        monkeypatch.setattr(export.fuse, 'mount', mount)
        monkeypatch.setattr(sandbox.Sandbox, '__init__', init)
        monkeypatch.setattr(sandbox.Sandbox, 'start', start)
        monkeypatch.setattr(export, 'stop_daemon', stop)

    @staticmethod
    def _greet(cmd):
        """Write to the daemon's monitor descriptor, as it would."""
        chardev = cmd[cmd.index('--chardev') + 1]
        fd = int(chardev.rsplit('fd=', 1)[1])
        os.write(fd, b'hello')
        return fd


@pytest.fixture
def journal(tmp_path):
    with state.Journal(str(tmp_path / 'state'), '/inst/disk',
                       'qsd') as journal:
        yield journal


@pytest.mark.parametrize('share', [False, True])
def test_export_mounts_then_starts_the_daemon_journaling_both(
        helpers, monkeypatch, chain, journal, conf, share):
    fake = Export(helpers, monkeypatch)
    workdir = journal.make_dir('qsd')
    path = export.export_image(conf.conf, chain, workdir, (4242, 4343),
                               journal, share=share)
    assert path == os.path.join(workdir, 'export.raw')
    assert fake.mounts == [(path, 'qsd', share)]
    steps = journal.steps
    assert [s['kind'] for s in steps] == ['tmpdir', 'tmpdir', 'fuse',
                                          'process']
    assert steps[2]['path'] == path
    proc = helpers.started[0]
    assert steps[3]['pid'] == proc.pid
    assert steps[3]['marker'] == workdir
    assert steps[3]['timeout'] == export.STOP_TIMEOUT
    # The daemon runs as the ids given, in a sandbox naming the work dir.
    assert fake.boxes[0]['marker'] == workdir
    assert fake.boxes[0]['ids'] == (4242, 4343)
    # Our copy of the FUSE descriptor is closed; the sandbox had its own.
    with pytest.raises(OSError):
        os.fstat(fake.fuse_fds[0])
    # The undo stops the daemon through our end of its monitor.
    journal.close()
    assert fake.stopped == [(proc, b'hello')]


def test_the_sandbox_serves_the_fuse_mount_over_an_empty_export(
        helpers, monkeypatch, chain, journal, conf):
    fake = Export(helpers, monkeypatch)
    export.export_image(conf.conf, chain, journal.make_dir('qsd'),
                        (4242, 4343), journal)
    box = fake.boxes[0]
    assert box['cmd'] == box['argv'][box['argv'].index('--') + 1:]
    assert box['cmd'][0] == 'qemu-storage-daemon'
    argv = box['argv']
    setenv = [argv[i + 1:i + 3] for i, a in enumerate(argv)
              if a == '--setenv']
    assert [sandbox.FUSE_FD_ENV] in [s[:1] for s in setenv]
    binds = [argv[i - 2:i] + argv[i + 2:i + 3] for i, a in enumerate(argv)
             if a == '--ro-bind-data']
    assert ['--perms', '600', '/export.raw'] in binds
    assert ['--perms', '755', '/usr/bin/fusermount3'] in binds


def test_an_export_that_does_not_come_up_fails_with_the_daemons_words(
        helpers, monkeypatch, chain, journal, conf):
    fake = Export(helpers, monkeypatch, comes_up=False, daemon=(
        'sh', '-c', 'echo "Could not open backing file" >&2; exit 1'))
    with pytest.raises(exception.HandlerFailed) as err:
        export.export_image(conf.conf, chain, journal.make_dir('qsd'),
                            (4242, 4343), journal)
    assert str(err.value) == ('qemu-storage-daemon could not export '
                              '%s: Could not open backing file' % chain.path)
    # Both stay journaled, for the unwinding.
    assert [s['kind'] for s in journal.steps][-2:] == ['fuse', 'process']
    journal.close()
    assert [proc for proc, _hello in fake.stopped] == helpers.started
