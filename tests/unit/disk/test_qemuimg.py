"""Unit tests of ``qemu-img info``'s sandbox: who it runs as, what it is
handed, and how its end is read.

``utils.execute`` is replaced: the bwrap command line is asserted, never
run (tests/functional/disk/test_image.py runs the real one).
"""

import json
import os
import pwd
import re
import types

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import qemuimg
from nova_ksm_inject.disk import sandbox

ANSWER = json.dumps({'format': 'raw', 'virtual-size': 512})


class Runs:
    """Stands in for ``utils.execute``; records each sandboxed run."""

    def __init__(self, failure=None):
        self.runs = []
        self.failure = failure

    def __call__(self, *argv, **kwargs):
        # Root drops to the helper's ids with setpriv, before bwrap.
        prefix, argv = argv[:argv.index(sandbox.BWRAP)], \
            argv[argv.index(sandbox.BWRAP):]
        ids = (None, None)
        if prefix:
            assert prefix == tuple(sandbox.drop_to(prefix[2], prefix[4]))
            ids = (int(prefix[2]), int(prefix[4]))
        cmd = argv[argv.index('--') + 1:]
        fd = int(re.fullmatch(r'/proc/self/fd/([0-9]+)', cmd[-1]).group(1))
        assert kwargs['pass_fds'] == [fd]
        self.runs.append(types.SimpleNamespace(
            argv=argv, cmd=cmd, target=os.readlink('/proc/self/fd/%d' % fd),
            uid=ids[0], gid=ids[1], limits=kwargs['preexec_fn'].limits))
        if self.failure:
            raise self.failure
        return ANSWER, ''


@pytest.fixture
def runs(monkeypatch):
    fake = Runs()
    monkeypatch.setattr(utils, 'execute', fake)
    monkeypatch.setattr(qemuimg.shutil, 'which', lambda name: '/usr/bin/x')
    return fake


@pytest.fixture
def layer(tmp_path):
    path = tmp_path / 'disk'
    path.write_bytes(b'\0' * 512)
    return str(path)


class _Os:
    """``os`` for the sandbox: another euid, the file another owner."""

    def __init__(self, euid, owner):
        self.euid = euid
        self.owner = owner

    def __getattr__(self, name):
        return getattr(os, name)

    def geteuid(self):
        return self.euid

    def getegid(self):
        return self.euid + 1

    def stat(self, path):
        assert path.startswith('/proc/self/fd/')  # the inode opened
        return types.SimpleNamespace(st_uid=self.owner,
                                     st_gid=self.owner + 1)


def as_caller(monkeypatch, euid, owner=None):
    """Run as ``euid``; the file appears owned by ``owner``."""
    monkeypatch.setattr(sandbox, 'os', _Os(euid, owner))


def test_held_layer_is_handed_as_a_descriptor_under_qemu_img_limits(
        runs, layer, conf, monkeypatch):
    conf.config(group='inject', qemu_img_cpu_time=7,
                qemu_img_address_space=128 << 20, helper_cpu_time=99)
    as_caller(monkeypatch, 1000)
    fd = os.open(layer, os.O_RDONLY)
    try:
        source = '/proc/%d/fd/%d' % (os.getpid(), fd)
        assert qemuimg.info(layer, source, 'raw')['virtual-size'] == 512
    finally:
        os.close(fd)
    [run] = runs.runs
    assert run.cmd[:-1] == ('qemu-img', 'info', '--output=json', '-f', 'raw')
    assert run.target == layer
    # The path only names the sandbox (its marker); nothing opens it.
    assert run.argv.count(layer) == 1 and source not in run.argv
    assert run.argv[run.argv.index(layer) - 1] == sandbox.MARKER_ENV
    assert '--unshare-all' in run.argv
    assert (run.limits.cpu_time, run.limits.address_space) == (7, 128 << 20)
    assert (run.uid, run.gid) == (None, None)  # the caller itself


def test_unprivileged_caller_runs_it_as_itself(runs, layer, monkeypatch):
    as_caller(monkeypatch, 1000, owner=2000)
    qemuimg.info(layer, None, 'raw')
    assert (runs.runs[0].uid, runs.runs[0].gid) == (None, None)


def test_root_runs_it_as_the_files_owner(runs, layer, monkeypatch):
    as_caller(monkeypatch, 0, owner=2000)
    qemuimg.info(layer, None, 'raw')
    assert (runs.runs[0].uid, runs.runs[0].gid) == (2000, 2001)


def test_roots_own_file_is_read_as_helper_user(runs, layer, conf,
                                                monkeypatch):
    conf.config(group='inject', helper_user='nobody')
    nobody = pwd.getpwnam('nobody')
    as_caller(monkeypatch, 0, owner=0)
    qemuimg.info(layer, None, 'raw')
    assert (runs.runs[0].uid, runs.runs[0].gid) == (nobody.pw_uid,
                                                     nobody.pw_gid)


@pytest.mark.parametrize('user, expected', [
    ('no-such-user-here', 'does not exist'), ('root', 'is root')])
def test_helper_user_must_be_an_unprivileged_user(runs, layer, conf,
                                                  monkeypatch, user,
                                                  expected):
    conf.config(group='inject', helper_user=user)
    as_caller(monkeypatch, 0, owner=0)
    with pytest.raises(exception.ConfigError, match=expected):
        qemuimg.info(layer, None, 'raw')
    assert runs.runs == []


@pytest.mark.parametrize('code, signal', [(-9, 9), (152, 24), (137, 9)])
def test_signal_reported_by_bwrap_or_directly(runs, layer, monkeypatch,
                                              code, signal):
    # bwrap exits 128 + N when its command dies of signal N.
    as_caller(monkeypatch, 1000)
    runs.failure = exception.CommandFailed(action='x', cmd='bwrap',
                                           code=code, stderr='')
    with pytest.raises(exception.ImageRefused,
                       match='killed by signal %d,' % signal):
        qemuimg.info(layer, None, 'raw')


def test_descriptor_closed_after_the_run(runs, layer, monkeypatch):
    as_caller(monkeypatch, 1000)
    before = set(os.listdir('/proc/self/fd'))
    qemuimg.info(layer, None, 'raw')
    runs.failure = exception.CommandFailed(action='x', cmd='bwrap', code=1,
                                           stderr='bad')
    with pytest.raises(exception.ImageRefused):
        qemuimg.info(layer, None, 'raw')
    assert set(os.listdir('/proc/self/fd')) <= before
