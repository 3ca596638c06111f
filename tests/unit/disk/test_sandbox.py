"""The bubblewrap sandbox of the helpers, without bubblewrap or root.

Command lines are checked as data; what the helper inherits is checked by
running a stand-in ``bwrap`` (a shell script that drops the options up to
``--`` and runs the rest), so a descriptor handed over must really reach
the command. Root is simulated (``os.geteuid`` patched): its ``setpriv``
prefix is checked as data; the resource limits and death signal are
recorded, never applied to the test process.
"""

import os
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import time
import types

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject.disk import sandbox
from tests.unit.disk import fakes_qmp

HOST_BINDS = ('--bind', '--bind-try', '--ro-bind', '--ro-bind-try',
              '--dev-bind', '--dev-bind-try', '--bind-fd', '--ro-bind-fd')


def as_uid(monkeypatch, uid, gid=None):
    """The process runs as ``uid`` (0: root), whoever runs the tests."""
    monkeypatch.setattr(os, 'geteuid', lambda: uid)
    monkeypatch.setattr(os, 'getegid', lambda: uid if gid is None else gid)


@pytest.fixture
def box(conf, monkeypatch):
    as_uid(monkeypatch, 1000)
    box = sandbox.Sandbox(conf.conf, '/state/work/1-abc')
    yield box
    box.close()


def option_values(cmd, option, count=1):
    """The arguments following each occurrence of ``option``."""
    return [tuple(cmd[i + 1:i + 1 + count])
            for i, arg in enumerate(cmd) if arg == option]


def is_closed(fd):
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def same_file(fd, other):
    a, b = os.fstat(fd), os.fstat(other)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# -- the command line ---------------------------------------------------------

def test_every_namespace_is_unshared_and_the_helper_dies_with_us(box):
    cmd = box.command('fuse2fs', '/proc/self/fd/3')
    assert cmd[0] == sandbox.BWRAP
    # --unshare-all includes the network; --share-net would give it back.
    assert '--unshare-all' in cmd and '--share-net' not in cmd
    for option in ('--die-with-parent', '--new-session', '--clearenv'):
        assert option in cmd
    assert cmd[cmd.index('--'):] == ['--', 'fuse2fs', '/proc/self/fd/3']


def test_no_host_path_but_usr_is_bound_and_that_read_only(box):
    cmd = box.command('qemu-storage-daemon')
    binds = [(opt, *option_values(cmd, opt, 2)[0]) for opt in HOST_BINDS
             if opt in cmd]
    assert binds == [('--ro-bind', '/usr', '/usr')]
    assert cmd.count('--ro-bind') == 1


def test_environment_is_only_path_and_the_marker(box):
    cmd = box.command('partx')
    assert option_values(cmd, '--setenv', 2) == [
        ('PATH', '/usr/bin'), (sandbox.MARKER_ENV, '/state/work/1-abc')]
    # The environment is cleared before anything is set.
    assert cmd.index('--clearenv') < cmd.index('--setenv')


def test_directory_is_an_empty_dir_in_the_sandbox(box):
    box.directory('/image/root')
    assert option_values(box.command('x'), '--dir') == [('/image/root',)]


def test_pass_fd_hands_over_a_copy_by_its_proc_path(box, tmp_path):
    layer = tmp_path / 'layer'
    layer.write_bytes(b'layer')
    fd = os.open(layer, os.O_RDONLY)
    try:
        path = box.pass_fd(fd)
        assert path.startswith('/proc/self/fd/')
        copy = int(path.rsplit('/', 1)[1])
        assert copy != fd and same_file(copy, fd)
    finally:
        os.close(fd)
    # Ours is closed; the copy stays for the helper until close().
    assert not is_closed(copy)
    box.close()
    assert is_closed(copy)


def test_data_file_is_a_pipe_with_the_data_and_its_mode(box):
    box.data_file(b'payload', '/etc/thing', 0o600)
    cmd = box.command('x')
    fd, dest = option_values(cmd, '--ro-bind-data', 2)[0]
    assert dest == '/etc/thing'
    # --perms applies to the next operation only: it must come right before.
    at = cmd.index('--ro-bind-data')
    assert cmd[at - 2:at] == ['--perms', '600']
    assert os.read(int(fd), 100) == b'payload'


def test_fuse_server_gets_dev_fuse_its_descriptor_and_the_shim(box,
                                                              tmp_path):
    fuse_file = tmp_path / 'fuse'
    fuse_file.write_bytes(b'')
    fuse_fd = os.open(fuse_file, os.O_RDONLY)
    try:
        box.fuse_server(fuse_fd)
        cmd = box.command('fuse2fs')
        assert option_values(cmd, '--dev-bind', 2) == [('/dev/fuse',
                                                        '/dev/fuse')]
        setenv = dict(option_values(cmd, '--setenv', 2))
        copy = int(setenv[sandbox.FUSE_FD_ENV])
        assert copy != fuse_fd and same_file(copy, fuse_fd)
    finally:
        os.close(fuse_fd)
    fd, dest = option_values(cmd, '--ro-bind-data', 2)[0]
    assert dest == '/usr/bin/fusermount3'
    at = cmd.index('--ro-bind-data')
    assert cmd[at - 2:at] == ['--perms', '755']
    assert os.read(int(fd), 65536) == sandbox.FUSERMOUNT_SHIM
    box.close()
    assert is_closed(copy)


# -- the fusermount3 stand-in -------------------------------------------------

def run_shim(tmp_path, *args):
    """Run FUSERMOUNT_SHIM as libfuse would; what it sent on the socket."""
    shim = tmp_path / 'fusermount3'
    shim.write_bytes(sandbox.FUSERMOUNT_SHIM)
    target = tmp_path / 'fuse-connection'
    target.write_bytes(b'')
    ours, theirs = socket.socketpair()
    served = os.open(target, os.O_RDONLY)
    with ours, theirs:
        env = {'_FUSE_COMMFD': str(theirs.fileno()),
               sandbox.FUSE_FD_ENV: str(served)}
        proc = subprocess.run([sys.executable, str(shim), *args], env=env,
                              pass_fds=(theirs.fileno(), served),
                              capture_output=True, timeout=10)
        theirs.close()
        ours.settimeout(5)
        msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
    try:
        sent = [same_file(fd, served) for fd in fds]
    finally:
        for fd in (*fds, served):
            os.close(fd)
    return proc, msg, sent


def test_shim_sends_the_named_descriptor_over_fuse_commfd(tmp_path):
    proc, msg, sent = run_shim(tmp_path, '-o', 'rw', '--', '/image/root')
    assert proc.returncode == 0, proc.stderr
    assert msg == b'\0' and sent == [True]


def test_shim_does_nothing_on_unmount(tmp_path):
    proc, msg, sent = run_shim(tmp_path, '-u', '/image/root')
    assert proc.returncode == 0, proc.stderr
    assert (msg, sent) == (b'', [])


def test_shim_runs_the_sandboxs_python_isolated():
    # Only /usr is in the sandbox; -I ignores PYTHON* variables and the
    # user's site directory, -S skips site. The kernel hands everything
    # after the interpreter on a #! line over as ONE argument, so the
    # flags must be one word.
    interpreter, *flags = sandbox.FUSERMOUNT_SHIM.split(b'\n')[0].split()
    assert interpreter == b'#!/usr/bin/python3' and flags == [b'-IS']


# -- running it ---------------------------------------------------------------

@pytest.fixture
def helpers(tmp_path, monkeypatch, conf):
    helpers = fakes_qmp.Helpers(tmp_path, monkeypatch, conf.conf)
    yield helpers
    helpers.close()


def handed_over(box, tmp_path, data):
    """A file holding ``data`` handed to ``box``; its path there."""
    layer = tmp_path / 'layer'
    layer.write_bytes(data)
    with sandbox.opened(str(layer)) as fd:
        return box.pass_fd(fd)


def test_the_passed_descriptors_are_what_the_helper_inherits(box, tmp_path,
                                                            helpers):
    path = handed_over(box, tmp_path, b'guest bytes')
    box.data_file(b'+data', '/usr/bin/fusermount3')
    data = '/proc/self/fd/%s' % option_values(box.command(),
                                              '--ro-bind-data', 2)[0][0]
    out, _err = box.run('cat', path, data, action='reading')
    assert out == 'guest bytes+data'


def test_a_descriptor_not_passed_is_not_inherited(box, tmp_path, helpers):
    layer = tmp_path / 'layer'
    layer.write_bytes(b'guest bytes')
    with sandbox.opened(str(layer)) as fd:
        with pytest.raises(exception.CommandFailed):
            box.run('cat', '/proc/self/fd/%d' % fd, action='reading')


def test_start_hands_over_the_descriptors_and_closes_ours(box, tmp_path,
                                                         helpers):
    path = handed_over(box, tmp_path, b'started')
    copy = int(path.rsplit('/', 1)[1])
    proc = box.start('cat', path)
    helpers.started.append(proc)
    assert is_closed(copy)
    assert proc.stdout.read() == b'started'
    assert proc.wait(10) == 0


@pytest.mark.parametrize('how', ['start', 'run'])
def test_missing_bwrap_is_tool_missing_naming_the_package(box, tmp_path,
                                                         monkeypatch, how):
    monkeypatch.setenv('PATH', str(tmp_path))  # nothing there
    box.data_file(b'x', '/x')
    fd = int(option_values(box.command(), '--ro-bind-data', 2)[0][0])
    with pytest.raises(exception.ToolMissing) as err:
        if how == 'start':
            box.start('fuse2fs')
        else:
            box.run('partx', action='reading the partition table')
    assert 'bwrap' in str(err.value) and 'bubblewrap' in str(err.value)
    assert is_closed(fd)


def test_check_available_names_the_package(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, 'which', lambda name: None)
    with pytest.raises(exception.HandlerUnavailable) as err:
        sandbox.check_available()
    assert 'bubblewrap' in str(err.value)


def test_check_fuse_without_dev_fuse_says_modprobe(monkeypatch):
    exists = os.path.exists
    monkeypatch.setattr(os.path, 'exists',
                        lambda p: p != '/dev/fuse' and exists(p))
    with pytest.raises(exception.HandlerUnavailable) as err:
        sandbox.check_fuse()
    assert 'modprobe fuse' in str(err.value)


@pytest.mark.parametrize('uid', [0, 1000])
def test_check_fuse_needs_fusermount3_unless_root(monkeypatch, uid):
    as_uid(monkeypatch, uid)
    monkeypatch.setattr(os.path, 'exists', lambda p: p == '/dev/fuse')
    monkeypatch.setattr(sandbox.shutil, 'which', lambda name: None)
    if uid == 0:
        sandbox.check_fuse()
    else:
        with pytest.raises(exception.HandlerUnavailable) as err:
            sandbox.check_fuse()
        assert 'fuse3' in str(err.value)


# -- never root ---------------------------------------------------------------

@pytest.mark.parametrize('uid', [None, 0])
def test_root_caller_must_name_a_helper_uid(conf, monkeypatch, uid):
    as_uid(monkeypatch, 0)
    with pytest.raises(ValueError):
        sandbox.Sandbox(conf.conf, '/m', uid)


def drop(uid, gid):
    return ['setpriv', '--reuid', str(uid), '--regid', str(gid),
            '--clear-groups', '--pdeathsig', 'KILL', '--']


@pytest.mark.parametrize('gid, expected', [(4343, 4343), (None, 4242)])
def test_root_starts_bubblewrap_as_the_helper_uid_without_groups(
        conf, monkeypatch, gid, expected):
    as_uid(monkeypatch, 0)
    cmd = sandbox.Sandbox(conf.conf, '/m', 4242, gid).command('fuse2fs')
    at = cmd.index(sandbox.BWRAP)
    assert cmd[:at] == drop(4242, expected)


def test_unprivileged_caller_starts_bubblewrap_as_itself(conf, monkeypatch):
    as_uid(monkeypatch, 1000)
    cmd = sandbox.Sandbox(conf.conf, '/m', 4242).command('fuse2fs')
    assert cmd[0] == sandbox.BWRAP


class Recorder:
    """Records the id, limit and prctl calls a preexec_fn makes."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in ('setgroups', 'setresgid', 'setresuid', 'setuid',
                     'setgid'):
            monkeypatch.setattr(os, name, self._record(name))
        monkeypatch.setattr(resource, 'setrlimit', self._record('setrlimit'))
        # Not the test process's own death signal.
        monkeypatch.setattr(sandbox, '_libc', types.SimpleNamespace(
            prctl=self._record('prctl')))

    def _record(self, name):
        return lambda *args: self.calls.append((name, *args))


@pytest.mark.parametrize('caller', [0, 1000])
def test_the_child_is_limited_and_dies_with_us_ids_unchanged(
        conf, monkeypatch, caller):
    started = []
    monkeypatch.setattr(sandbox.subprocess, 'Popen',
                        lambda argv, **kw: started.append((argv, kw)))
    conf.config(group='inject', helper_cpu_time=7,
                helper_address_space=2 ** 28)
    as_uid(monkeypatch, caller)
    sandbox.Sandbox(conf.conf, '/m', 4242).start('fuse2fs')
    argv, kwargs = started[0]
    assert argv == sandbox.Sandbox(conf.conf, '/m', 4242).command('fuse2fs')
    recorder = Recorder(monkeypatch)
    kwargs['preexec_fn']()
    # Ids are setpriv's to change (after the fork, as root): a preexec_fn
    # of the privsep daemon, short of CAP_SETUID, could not.
    assert recorder.calls == [
        ('setrlimit', resource.RLIMIT_CPU, (7, 7)),
        ('setrlimit', resource.RLIMIT_AS, (2 ** 28, 2 ** 28)),
        ('prctl', 1, signal.SIGKILL, 0, 0, 0)]


# -- whose ids ----------------------------------------------------------------

def owned_by(monkeypatch, path, uid, gid):
    real = os.stat
    monkeypatch.setattr(os, 'stat', lambda p, *a, **kw: types.SimpleNamespace(
        st_uid=uid, st_gid=gid) if p == path else real(p, *a, **kw))


def test_helper_ids_are_the_callers_own_when_not_root(conf, monkeypatch):
    as_uid(monkeypatch, 1000, 1001)
    # Not even looked at: the path need not exist.
    assert sandbox.helper_ids('/nowhere', conf.conf) == (1000, 1001)


def test_root_runs_helpers_as_the_files_owner(conf, monkeypatch):
    as_uid(monkeypatch, 0)
    owned_by(monkeypatch, '/proc/9/fd/3', 4242, 4343)
    assert sandbox.helper_ids('/proc/9/fd/3', conf.conf) == (4242, 4343)


def test_roots_own_file_is_refused_to_a_writing_helper(conf, monkeypatch):
    as_uid(monkeypatch, 0)
    owned_by(monkeypatch, '/proc/9/fd/3', 0, 0)
    with pytest.raises(exception.HandlerFailed) as err:
        sandbox.helper_ids('/proc/9/fd/3', conf.conf, name='/inst/disk')
    assert '/inst/disk belongs to root' in str(err.value)
    assert 'chown' in str(err.value)


def test_roots_own_file_is_read_as_helper_user(conf, monkeypatch):
    as_uid(monkeypatch, 0)
    owned_by(monkeypatch, '/img', 0, 0)
    conf.config(group='inject', helper_user='reader')
    users = {'reader': types.SimpleNamespace(pw_uid=5000, pw_gid=5001)}
    monkeypatch.setattr(sandbox.pwd, 'getpwnam', users.__getitem__)
    assert sandbox.helper_ids('/img', conf.conf, writes=False) == (5000, 5001)


# -- waiting and ending -------------------------------------------------------

#: Says its piece, then says so (creates argv[1]), then lives on.
SPEAKER = """import sys, time
print("first", flush=True)
sys.stderr.write("bad superblock\\n\\nPlease run e2fsck -fy /image\\n")
sys.stderr.write("fuse2fs: Writing to the journal is not supported.\\n  \\n")
sys.stderr.flush()
open(sys.argv[1], "w").close()
time.sleep(30)
"""


def test_wait_until_ready_leaves_the_helper_running(helpers):
    proc = helpers.start('sleep', '30')
    answers = iter([FileNotFoundError(), False, True])

    def ready():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    assert sandbox.wait_until(ready, proc, 10) is True
    assert proc.poll() is None


def test_wait_until_a_dead_helper_is_false_at_once(helpers):
    proc = helpers.start('true')
    started = time.monotonic()
    assert sandbox.wait_until(lambda: False, proc, 10) is False
    assert time.monotonic() - started < 5


def test_wait_until_timeout_kills_the_helper(helpers):
    proc = helpers.start('sleep', '30')
    started = time.monotonic()
    assert sandbox.wait_until(lambda: False, proc, 0.2) is False
    assert proc.returncode == -9
    assert time.monotonic() - started < 5


def test_a_blocked_ready_is_ended_by_killing_the_helper(helpers):
    proc = helpers.start('sleep', '30')

    def ready():
        # Blocks until the helper dies (its output closes), like a stat of
        # a FUSE mount whose server hangs; 5 s at most should it never die.
        select.select([proc.stdout], [], [], 5)
        return False
    started = time.monotonic()
    assert sandbox.wait_until(ready, proc, 0.2) is False
    assert time.monotonic() - started < 3
    assert proc.returncode == -9


def test_last_words_is_the_last_line_but_fuse2fs_journal_warning(
        helpers, tmp_path):
    spoken = tmp_path / 'spoken'
    proc = helpers.python(SPEAKER, str(spoken))
    while not spoken.exists():
        time.sleep(0.002)
    assert sandbox.last_words(proc) == 'bad superblock'
    assert proc.returncode == -9  # killed, not waited for


def test_last_words_of_a_silent_helper_give_its_status(helpers):
    proc = helpers.python('raise SystemExit(3)')
    proc.wait(10)
    assert sandbox.last_words(proc) == (
        'it exited with status 3 and said nothing')


def test_kill_kills_and_reaps_a_running_helper(helpers):
    proc = helpers.start('sleep', '30')
    sandbox.kill(proc)
    assert proc.returncode == -9


def test_kill_reaps_an_exited_helper(helpers):
    proc = helpers.python('raise SystemExit(5)')
    while not procfs.stat(proc.pid).state == procfs.ZOMBIE:
        time.sleep(0.005)
    sandbox.kill(proc)
    assert proc.returncode == 5


def test_opened_is_read_only_and_closed_on_exit(tmp_path):
    path = tmp_path / 'img'
    path.write_bytes(b'x')
    with sandbox.opened(str(path)) as fd:
        assert os.read(fd, 1) == b'x'
        with pytest.raises(OSError):
            os.write(fd, b'y')
        assert stat.S_ISREG(os.fstat(fd).st_mode)
    assert is_closed(fd)
