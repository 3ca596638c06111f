"""The qsd handler without root: command lines, journal order, failures,
and the QMP stop against a stand-in daemon process.

The real daemon, FUSE export and loop mount are exercised in
tests/functional/disk/test_qsd.py.
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import qsd

RAW = disk_image.ImageInfo('/img/disk.raw', 'raw', 2 ** 30)
OVERLAY = disk_image.ImageInfo(
    '/inst/disk', 'qcow2', 2 ** 30,
    (('/base/mid.qcow2', 'qcow2'), ('/base/root.raw', 'raw')))


def blockdevs(image):
    args, top = qsd.blockdev_args(image)
    assert args[::2] == ['--blockdev'] * (len(args) // 2)
    return [json.loads(a) for a in args[1::2]], top


def test_raw_image_is_one_writable_raw_node():
    specs, top = blockdevs(RAW)
    assert specs == [{'driver': 'raw', 'node-name': 'top', 'read-only': False,
                      'file': {'driver': 'file', 'filename': '/img/disk.raw',
                               'read-only': False}}]
    assert top == 'top'


def test_chain_gets_an_explicit_driver_per_layer_bottom_first():
    specs, _top = blockdevs(OVERLAY)
    assert [(s['node-name'], s['driver'], s['file']['filename'],
             s['read-only'], s.get('backing', 'absent')) for s in specs] == [
        ('backing0', 'raw', '/base/root.raw', True, 'absent'),
        ('backing1', 'qcow2', '/base/mid.qcow2', True, 'backing0'),
        ('top', 'qcow2', '/inst/disk', False, 'backing1')]


def test_every_layer_is_opened_through_its_held_descriptor():
    held = dataclasses.replace(OVERLAY, source='/proc/1/fd/7',
                               backing_sources=('/proc/1/fd/8',
                                                '/proc/1/fd/9'))
    specs, _top = blockdevs(held)
    assert [(s['node-name'], s['file']['filename']) for s in specs] == [
        ('backing0', '/proc/1/fd/9'), ('backing1', '/proc/1/fd/8'),
        ('top', '/proc/1/fd/7')]


def test_qcow2_without_chain_never_opens_a_header_backing_file():
    image = disk_image.ImageInfo('/inst/flat.qcow2', 'qcow2', 2 ** 20)
    specs, _top = blockdevs(image)
    assert 'backing' in specs[0] and specs[0]['backing'] is None
    assert '"backing": null' in qsd.blockdev_args(image)[0][1]


def test_raw_layer_with_a_backing_file_is_a_programming_error():
    with pytest.raises(ValueError):
        qsd.layer_spec('n', '/x.raw', 'raw', 'below', read_only=True)


def test_daemon_command_exports_a_file_in_the_workdir(tmp_path):
    workdir = str(tmp_path / 'odd,dir')
    cmd, export = qsd.daemon_command(OVERLAY, workdir)
    assert cmd[0] == 'qemu-storage-daemon'
    assert export == os.path.join(workdir, 'export.raw')
    spec = json.loads(cmd[cmd.index('--export') + 1])
    assert spec == {'type': 'fuse', 'id': qsd.EXPORT_ID, 'node-name': 'top',
                    'mountpoint': export, 'writable': True,
                    'allow-other': 'off'}
    # Relative to the daemon's working directory (the work dir): a UNIX
    # socket path must stay under 108 bytes whatever [inject] state_dir.
    chardev = cmd[cmd.index('--chardev') + 1]
    assert chardev == ('socket,id=%s,path=%s,server=on,wait=off'
                       % (qsd.MONITOR_ID, qsd.MONITOR_SOCKET))
    assert cmd[-3:] == ['--daemonize', '--pidfile',
                        os.path.join(workdir, 'qsd.pid')]


def test_check_host_names_the_package(monkeypatch, conf):
    monkeypatch.setattr(qsd.shutil, 'which', lambda name: None)
    with pytest.raises(exception.HandlerUnavailable) as err:
        qsd.QsdHandler(conf.conf).check_host()
    assert 'qemu-system-common' in str(err.value)


class FakeDaemon:
    """Stands in for utils.execute running qemu-storage-daemon."""

    def __init__(self, monkeypatch, pid=4242, error=None):
        self.calls = []
        self.pid = pid
        self.error = error
        self.killed = []
        monkeypatch.setattr(utils, 'execute', self)

    def __call__(self, *cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        pidfile = cmd[cmd.index('--pidfile') + 1]
        if self.pid:
            with open(pidfile, 'w') as f:
                f.write('%d\n' % self.pid)
        if isinstance(self.error, subprocess.TimeoutExpired):
            kwargs['on_execute'](self)  # we are the Popen of the launcher
        if self.error:
            raise self.error
        return '', ''

    def kill(self):
        self.killed.append('kill')

    def wait(self):
        self.killed.append('wait')


@pytest.fixture
def handler(conf, monkeypatch):
    """A QsdHandler whose export check and loop mount are stand-ins."""
    stopped = []
    mounted = []
    monkeypatch.setattr(qsd, 'stop_daemon', lambda *a, **k: stopped.append(a))
    monkeypatch.setattr(qsd.QsdHandler, '_wait_export',
                        lambda self, image, export: None)

    def mount_raw_file(path, partition, journal):
        journal.push('loop', undo_now=lambda: None, device='/dev/loop9',
                     backing=path)
        mounted.append((path, partition))
        return 'files'
    monkeypatch.setattr(qsd.mount, 'mount_raw_file', mount_raw_file)
    h = qsd.QsdHandler(conf.conf)
    h.stopped, h.mounted = stopped, mounted
    return h


def journal_for(conf):
    return state.Journal(conf.conf.inject.state_dir, '/inst/disk', 'qsd')


def test_mount_journals_workdir_daemon_export_then_loop(handler, conf,
                                                        monkeypatch):
    daemon = FakeDaemon(monkeypatch)
    with journal_for(conf) as journal:
        assert handler.mount(OVERLAY, 2, journal) == 'files'
        steps = journal.steps
        assert [s['kind'] for s in steps] == ['tmpdir', 'tmpdir', 'mount',
                                              'process', 'loop']
        workdir = steps[1]['path']
        export = os.path.join(workdir, 'export.raw')
        assert steps[0]['path'] == journal.work_dir
        assert workdir == os.path.join(journal.work_dir, 'qsd')
        # Before the daemon, so unwound after it: the FUSE mount a failed
        # or killed daemon leaves behind is unmounted too.
        assert steps[2]['path'] == export
        assert steps[3]['pid'] == 4242 and steps[3]['marker'] == export
        assert handler.mounted == [(export, 2)]
        assert os.path.isfile(export)  # FUSE mounts over an existing file
        cmd, kwargs = daemon.calls[0]
        assert kwargs['timeout'] == conf.conf.inject.device_timeout
        assert kwargs['cwd'] == workdir  # where the monitor socket is
        assert 'run_as_root' not in kwargs  # we run as root already
    assert handler.stopped == [(4242, export, os.path.join(
        workdir, 'qmp.sock'), export)]
    assert not os.path.exists(workdir)


def test_daemon_failure_is_a_handler_failure_and_unwinds(handler, conf,
                                                         monkeypatch):
    FakeDaemon(monkeypatch, pid=None, error=exception.CommandFailed(
        action='Exporting', cmd='qemu-storage-daemon', code=1,
        stderr='Could not open backing file'))
    with journal_for(conf) as journal:
        with pytest.raises(exception.HandlerFailed) as err:
            handler.mount(OVERLAY, 0, journal)
        assert [s['kind'] for s in journal.steps] == ['tmpdir', 'tmpdir',
                                                      'mount']
        workdir = journal.steps[1]['path']
    assert 'could not export /inst/disk' in str(err.value)
    assert 'Could not open backing file' in str(err.value)
    assert not os.path.exists(workdir) and handler.stopped == []


def test_daemon_that_wrote_a_pid_before_failing_is_still_stopped(
        handler, conf, monkeypatch):
    FakeDaemon(monkeypatch, pid=777, error=exception.CommandFailed(
        action='Exporting', cmd='qemu-storage-daemon', code=1,
        stderr='fuse: mount failed'))
    with journal_for(conf) as journal:
        with pytest.raises(exception.HandlerFailed):
            handler.mount(OVERLAY, 0, journal)
    assert [s[0] for s in handler.stopped] == [777]


def test_start_timeout_kills_the_launcher_and_stops_the_daemon(
        handler, conf, monkeypatch):
    daemon = FakeDaemon(monkeypatch, pid=None, error=subprocess.
                        TimeoutExpired('qemu-storage-daemon', 10))
    searched = []
    monkeypatch.setattr(qsd, 'daemons_serving',
                        lambda export: searched.append(export) or [4343])
    with journal_for(conf) as journal:
        with pytest.raises(exception.HandlerFailed) as err:
            handler.mount(OVERLAY, 0, journal)
    assert daemon.killed == ['kill', 'wait']
    assert 'device_timeout' in str(err.value)
    # No pid file yet: the daemon stuck before it was found by its export.
    assert [s[0] for s in handler.stopped] == [4343]
    assert handler.stopped[0][1] == searched[0]


def test_daemons_serving_finds_a_process_by_its_export(tmp_path):
    export = str(tmp_path / 'export.raw')
    proc = subprocess.Popen([sys.executable, '-c', 'import time; '
                             'time.sleep(60)', export])
    try:
        assert qsd.daemons_serving(export) == [proc.pid]
        assert qsd.daemons_serving(str(tmp_path / 'other')) == []
    finally:
        proc.kill()
        proc.wait()


def test_inspect_is_refused(handler, conf, monkeypatch):
    daemon = FakeDaemon(monkeypatch)
    with journal_for(conf) as journal:
        with pytest.raises(exception.HandlerFailed):
            handler.mount(OVERLAY, -1, journal)
    assert daemon.calls == []


def test_read_pid(tmp_path):
    path = tmp_path / 'pid'
    assert qsd.read_pid(str(path)) is None
    path.write_text('')
    assert qsd.read_pid(str(path)) is None
    path.write_text('123\n')
    assert qsd.read_pid(str(path)) == 123


# A stand-in daemon: a QMP monitor on a UNIX socket that exits on "quit"
# (after closing the monitor, as qemu does), ignores it, or has no monitor.
# It writes how it ended to a status file: the process is reaped by the
# code under test, so its exit status cannot be read here.
STAND_IN = textwrap.dedent('''
    import json, os, signal, socket, sys, time
    path, mode, status = sys.argv[1], sys.argv[2], sys.argv[3]
    def ended(how):
        with open(status, 'w') as f:
            f.write(how)
        os._exit(0)
    signal.signal(signal.SIGTERM, lambda *a: ended('SIGTERM'))
    if mode == 'nomonitor':
        print('ready', flush=True)
        time.sleep(60)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    print('ready', flush=True)
    conn, _ = server.accept()
    f = conn.makefile('rwb')
    f.write(b'{"QMP": {"version": {}, "capabilities": []}}\\n'); f.flush()
    for line in f:
        cmd = json.loads(line)['execute']
        f.write(b'{"return": {}}\\n'); f.flush()
        if cmd == 'quit' and mode == 'obey':
            conn.close()
            ended('quit')
    time.sleep(60)
''')


def stand_in(tmp_path, mode):
    sock = str(tmp_path / 'qmp.sock')
    status = tmp_path / 'status'
    proc = subprocess.Popen([sys.executable, '-c', STAND_IN, sock, mode,
                             str(status)], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b'ready\n'
    return proc, sock, str(status), status


def test_stop_daemon_quits_through_qmp(tmp_path):
    proc, sock, marker, status = stand_in(tmp_path, 'obey')
    started = time.monotonic()
    qsd.stop_daemon(proc.pid, marker, sock, marker, timeout=5)
    assert time.monotonic() - started < 2
    assert status.read_text() == 'quit'  # exited by itself: no signal
    proc.wait(timeout=5)


def test_stop_daemon_signals_a_daemon_that_ignores_quit(tmp_path):
    proc, sock, marker, status = stand_in(tmp_path, 'ignore')
    qsd.stop_daemon(proc.pid, marker, sock, marker, timeout=1)
    assert status.read_text() == 'SIGTERM'


def test_stop_daemon_without_monitor_signals(tmp_path, caplog):
    proc, sock, marker, status = stand_in(tmp_path, 'nomonitor')
    qsd.stop_daemon(proc.pid, marker, sock, str(tmp_path / 'x'), timeout=5)
    assert status.read_text() == 'SIGTERM'
    assert 'did not quit through QMP' in caplog.text


def test_stop_daemon_leaves_an_unrelated_process_alone(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', 'import time; '
                             'time.sleep(60)'])
    try:
        qsd.stop_daemon(proc.pid, str(tmp_path / 'marker'),
                        str(tmp_path / 'missing.sock'), str(tmp_path / 'x'))
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
