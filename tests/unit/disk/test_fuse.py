"""FUSE mounts made by the caller, without root and without /dev/fuse.

The unprivileged mount runs a stand-in ``fusermount3`` that speaks the
``_FUSE_COMMFD`` protocol (it sends a descriptor of a file of ours); the
root mount's ``mount`` and ``/dev/fuse`` are patched and asserted.
Mounted-ness is read from a fake ``/proc/self/mountinfo``.
"""

import json
import os
import sys

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils
from nova_ksm_inject.disk import fuse

#: argv: the argv log, the file whose descriptor is sent, the mode.
FUSERMOUNT = '''#!%s
import json, os, socket, sys
log, served, mode = %r, %r, %r
with open(log, 'w') as f:
    json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, f)
if mode == 'fail':
    sys.exit('fusermount3: failed to access mountpoint: Permission denied')
comm = socket.socket(fileno=int(os.environ['_FUSE_COMMFD']))
if mode == 'send':
    socket.send_fds(comm, [b'\\0'], [os.open(served, os.O_RDONLY)])
'''


def as_uid(monkeypatch, uid):
    monkeypatch.setattr(os, 'geteuid', lambda: uid)


class FakeFusermount:
    """``fuse.FUSERMOUNT`` replaced by a script; what it was given."""

    def __init__(self, tmp_path, monkeypatch, mode='send'):
        self.log = tmp_path / 'fusermount.json'
        self.served = tmp_path / 'served'
        self.served.write_bytes(b'the connection')
        script = tmp_path / 'fusermount3'
        script.write_text(FUSERMOUNT % (sys.executable, str(self.log),
                                        str(self.served), mode))
        script.chmod(0o755)
        # Not through PATH: fuse gives fusermount3 a fixed PATH, which the
        # lookup of the command itself uses.
        monkeypatch.setattr(fuse, 'FUSERMOUNT', str(script))
        as_uid(monkeypatch, 1000)

    def given(self):
        return json.loads(self.log.read_text())


def open_fds():
    return set(os.listdir('/proc/self/fd'))


def test_unprivileged_mount_returns_the_descriptor_fusermount3_sent(
        tmp_path, monkeypatch):
    fake = FakeFusermount(tmp_path, monkeypatch)
    mountpoint = str(tmp_path / 'root')
    fd = fuse.mount(mountpoint, 'fuse2fs')
    try:
        assert os.read(fd, 100) == b'the connection'
        assert os.fstat(fd).st_ino == os.stat(fake.served).st_ino
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)
    given = fake.given()
    assert given['argv'] == ['-o', 'nosuid,nodev,noexec,fsname=fuse2fs,'
                             'subtype=fuse2fs', '--', mountpoint]
    # The setuid helper gets a fixed PATH and nothing of our environment.
    assert set(given['env']) - {'PWD', 'LC_CTYPE'} == {'_FUSE_COMMFD',
                                                       'PATH'}
    assert given['env']['PATH'] == '/usr/bin:/bin'


def test_unprivileged_mount_ignores_share(tmp_path, monkeypatch):
    fake = FakeFusermount(tmp_path, monkeypatch)
    os.close(fuse.mount(str(tmp_path / 'export.raw'), 'qsd', share=True))
    assert 'allow_other' not in fake.given()['argv'][1]


@pytest.mark.parametrize('mode, reason', [
    ('fail', 'Permission denied'),
    ('silent', 'passed no descriptor')])
def test_fusermount3_that_fails_or_sends_nothing_names_the_mountpoint(
        tmp_path, monkeypatch, mode, reason):
    FakeFusermount(tmp_path, monkeypatch, mode)
    mountpoint = str(tmp_path / 'root')
    before = open_fds()
    with pytest.raises(exception.HandlerFailed) as err:
        fuse.mount(mountpoint, 'fuse2fs')
    assert 'could not mount FUSE on %s' % mountpoint in str(err.value)
    assert reason in str(err.value)
    assert open_fds() == before  # both socket ends closed


class RootMount:
    """Root's mount: /dev/fuse opened (as /dev/null) and ``mount`` run."""

    def __init__(self, monkeypatch, error=None):
        self.calls = []
        self.opened = []
        self.error = error
        real_open = os.open

        def fake_open(path, flags, *args, **kwargs):
            if path != '/dev/fuse':
                return real_open(path, flags, *args, **kwargs)
            fd = real_open(os.devnull, flags)
            self.opened.append((fd, flags))
            return fd
        monkeypatch.setattr(os, 'open', fake_open)
        monkeypatch.setattr(utils, 'execute', self.execute)
        as_uid(monkeypatch, 0)

    def execute(self, *cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        if self.error:
            raise self.error
        return '', ''


@pytest.mark.parametrize('share, extra', [
    (False, ''), (True, ',allow_other,default_permissions')])
def test_root_mounts_dev_fuse_with_its_descriptor(tmp_path, monkeypatch,
                                                  share, extra):
    root = RootMount(monkeypatch)
    export = tmp_path / 'export.raw'
    export.write_bytes(b'')
    fd = fuse.mount(str(export), 'qsd', share=share)
    try:
        assert root.opened == [(fd, os.O_RDWR | os.O_CLOEXEC)]
        assert root.calls == [(
            ('mount', '-i', '-t', 'fuse.qsd', '-o',
             'fd=%d,rootmode=100000,user_id=0,group_id=0,nosuid,nodev,'
             'noexec%s' % (fd, extra), 'qsd', str(export)),
            {'pass_fds': (fd,),
             'action': 'mounting FUSE on %s' % export})]
    finally:
        os.close(fd)


def test_root_mount_of_a_directory_has_a_directory_rootmode(tmp_path,
                                                             monkeypatch):
    root = RootMount(monkeypatch)
    fd = fuse.mount(str(tmp_path), 'fuse2fs')
    os.close(fd)
    options = root.calls[0][0][5].split(',')
    assert 'rootmode=40000' in options
    assert 'allow_other' not in options


def test_failed_root_mount_closes_dev_fuse_and_names_the_mountpoint(
        tmp_path, monkeypatch):
    root = RootMount(monkeypatch, error=exception.CommandFailed(
        action='Mounting', cmd='mount', code=32, stderr='unknown filesystem'))
    with pytest.raises(exception.HandlerFailed) as err:
        fuse.mount(str(tmp_path), 'fuse2fs')
    assert 'could not mount FUSE on %s' % tmp_path in str(err.value)
    assert 'unknown filesystem' in str(err.value)
    fd = root.opened[0][0]
    with pytest.raises(OSError):
        os.fstat(fd)


# -- mounted or not -----------------------------------------------------------

@pytest.fixture
def mountinfo(tmp_path, monkeypatch):
    """A fake /proc whose self/mountinfo lists the points written."""
    proc = tmp_path / 'proc'
    (proc / 'self').mkdir(parents=True)
    monkeypatch.setattr(procfs, 'PROC_ROOT', str(proc))

    def write(*points):
        (proc / 'self' / 'mountinfo').write_text(''.join(
            '%d 1 0:%d / %s rw,nosuid - fuse.fuse2fs fuse2fs rw\n'
            % (30 + n, 50 + n, point.replace(' ', '\\040'))
            for n, point in enumerate(points)))
    write('/', '/proc')
    return write


def test_a_dead_fuse_mount_still_counts_as_mounted(tmp_path, mountinfo):
    # What a FUSE mount whose server died looks like: in mountinfo, and
    # not a mount to os.path.ismount (ENOTCONN).
    dead = tmp_path / 'dead root'
    dead.mkdir()
    mountinfo('/', str(dead))
    assert not os.path.ismount(dead)
    assert fuse.is_mounted(str(dead))
    assert not fuse.is_mounted(str(tmp_path))


class Executed:
    def __init__(self, monkeypatch):
        self.cmds = []
        monkeypatch.setattr(utils, 'execute', self)

    def __call__(self, *cmd, **kwargs):
        self.cmds.append(cmd)
        return '', ''


@pytest.mark.parametrize('uid, lazy, cmd', [
    (0, False, ['umount']),
    (0, True, ['umount', '--lazy']),
    (1000, False, ['fusermount3', '-u']),
    (1000, True, ['fusermount3', '-u', '-z'])])
def test_unmount_command_depends_on_root_and_lazy(monkeypatch, mountinfo,
                                                  uid, lazy, cmd):
    mountinfo('/', '/state/work/1/root')
    executed = Executed(monkeypatch)
    as_uid(monkeypatch, uid)
    fuse.unmount('/state/work/1/root', lazy=lazy)
    assert executed.cmds == [(*cmd, '/state/work/1/root')]


class Busy:
    """``umount`` that finds the mount busy ``times`` times."""

    def __init__(self, monkeypatch, times, stderr='target is busy.'):
        self.cmds, self.times, self.stderr = [], times, stderr
        monkeypatch.setattr(utils, 'execute', self)

    def __call__(self, *cmd, **kwargs):
        self.cmds.append(cmd)
        if len(self.cmds) <= self.times:
            raise exception.CommandFailed(
                action=kwargs['action'], cmd=' '.join(cmd), code=32,
                stderr='umount: %s: %s' % (cmd[-1], self.stderr))
        return '', ''


def test_a_busy_mount_is_unmounted_again_until_it_is_not(monkeypatch,
                                                         mountinfo):
    """The kernel may drop a closed file's last reference to the mount a
    moment after the close: umount finds the mount busy, then not."""
    mountinfo('/', '/state/work/1/root')
    busy = Busy(monkeypatch, times=3)
    slept = []
    fuse.unmount('/state/work/1/root', sleep=slept.append)
    assert len(busy.cmds) == 4 and slept == [fuse.BUSY_SLEEP] * 3


@pytest.mark.parametrize('times, stderr, lazy, calls', [
    (1000, 'target is busy.', False,
     int(fuse.BUSY_SECONDS / fuse.BUSY_SLEEP) + 1),  # still busy: fails
    (1, 'not mounted.', False, 1),  # another failure: at once
    (1, 'target is busy.', True, 1)])  # a lazy unmount is not busy
def test_an_unmount_that_keeps_failing_raises(monkeypatch, mountinfo,
                                              times, stderr, lazy, calls):
    mountinfo('/', '/state/work/1/root')
    busy = Busy(monkeypatch, times=times, stderr=stderr)
    with pytest.raises(exception.CommandFailed, match=stderr):
        fuse.unmount('/state/work/1/root', lazy=lazy,
                     sleep=lambda seconds: None)
    assert len(busy.cmds) == calls


@pytest.mark.parametrize('uid', [0, 1000])
def test_unmount_of_what_is_not_mounted_does_nothing(monkeypatch, mountinfo,
                                                     uid):
    mountinfo('/', '/state/work/1/other')
    executed = Executed(monkeypatch)
    as_uid(monkeypatch, uid)
    fuse.unmount('/state/work/1/root', lazy=True)
    assert executed.cmds == []

