"""Every failure unwinds every step; a killed run is swept by cleanup.

Faults are injected at each step of a real loop mount (the command runner
fails the Nth command, injection raises, Ctrl-C arrives) and the
``no_leaks`` fixture checks that no loop device, mount, temp dir or journal
record remains.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from tests.functional.conftest import Debugfs

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITeardown teardown@ci'


def fail_command(monkeypatch, name):
    real = utils.execute
    calls = []

    def execute(*cmd, **kwargs):
        calls.append(cmd[0])
        if cmd[0] == name:
            raise exception.CommandFailed(action='Injected fault',
                                          cmd=' '.join(cmd), code=1,
                                          stderr='fault injected by test')
        return real(*cmd, **kwargs)
    monkeypatch.setattr(utils, 'execute', execute)
    return calls


@pytest.mark.parametrize('command', ['partx', 'losetup', 'mount'])
def test_command_failure_at_each_step(images, no_leaks, monkeypatch,
                                      command):
    image, _offset = images.raw_mbr()
    calls = fail_command(monkeypatch, command)
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(image, inject.InjectionRequest(key=KEY), partition=2,
                        handler_names=['loop'], use_cow=False)
    assert command in calls
    assert 'fault injected' in str(err.value) or 'not found' in str(
        err.value)


@pytest.mark.parametrize('fault,expected', [
    (RuntimeError('boom'), exception.InjectionFailed),
    (KeyboardInterrupt(), KeyboardInterrupt)])
def test_failure_during_injection_unwinds(images, no_leaks, monkeypatch,
                                          fault, expected):
    image = images.raw_fs()

    def explode(files, request, image_desc='', conf=None):
        files.makedirs('/root/.ssh', 0o700)
        raise fault
    monkeypatch.setattr(api.inject, 'inject_data', explode)
    with pytest.raises(expected):
        api.inject_data(image, inject.InjectionRequest(key=KEY), partition=0,
                        handler_names=['loop'], use_cow=False)


def _deny(*args, **kwargs):
    raise PermissionError(13, 'Permission denied (fault injected)')


# Each step of a loop injection, and what the caller must then see: the
# handler's own steps fail the handler (the chain moves on, and with no
# other handler says so); the rest fail the injection. Always one of our
# errors, never the OSError itself, and never anything left behind.
STEPS = {
    'state dir': ('state.private_dir', exception.InjectionFailed),
    'work dir': ('state.Journal.make_dir', exception.NoHandlerMounted),
    'loop attach': ('mount.attach_loop', exception.NoHandlerMounted),
    'mount': ('mount.mount_device', exception.NoHandlerMounted),
    'guest root': ('guestpath.HostRootFiles.__init__',
                   exception.NoHandlerMounted),
    'guest write': ('guestpath.HostRootFiles.write',
                    exception.InjectionFailed),
    'header read': ('header.read', exception.ImageRefused),
}


@pytest.mark.parametrize('step', sorted(STEPS))
def test_os_error_at_each_step_unwinds_completely(images, no_leaks,
                                                  monkeypatch, step):
    from nova_ksm_inject.disk import guestpath  # noqa: F401
    from nova_ksm_inject.disk import header  # noqa: F401
    from nova_ksm_inject.disk import mount  # noqa: F401
    from nova_ksm_inject.disk import state  # noqa: F401

    target, expected = STEPS[step]
    module, _, attr = target.partition('.')
    owner = sys.modules['nova_ksm_inject.disk.' + module]
    for part in attr.split('.')[:-1]:
        owner = getattr(owner, part)
    monkeypatch.setattr(owner, attr.split('.')[-1], _deny)
    image, offset = images.raw_mbr()
    with pytest.raises(expected) as err:
        api.inject_data(image, inject.InjectionRequest(key=KEY), partition=2,
                        handler_names=['loop'], use_cow=False)
    assert 'fault injected' in str(err.value)
    assert not Debugfs(image, offset).exists('/root/.ssh/authorized_keys')


def test_os_error_while_unmounting_keeps_the_record_for_cleanup(
        images, tmp_path, no_leaks, monkeypatch):
    from nova_ksm_inject.disk import sweep
    from nova_ksm_inject.disk import undo

    image, offset = images.raw_mbr()
    monkeypatch.setitem(undo.UNDO, 'mount', _deny)
    with pytest.raises(exception.UnwindFailed, match='fault injected'):
        api.inject_data(image, inject.InjectionRequest(key=KEY), partition=2,
                        handler_names=['loop'], use_cow=False)
    records = os.listdir(tmp_path / 'state' / 'journal')
    assert len(records) == 1, 'the failed unwind must leave its record'
    monkeypatch.undo()
    results = sweep.sweep(str(tmp_path / 'state'))
    assert [r.errors for r in results] == [[]], results
    # The key was written before the unmount failed, and is there.
    assert KEY in Debugfs(image, offset).cat('/root/.ssh/authorized_keys')


def test_limits_checked_before_anything_is_mounted(images, no_leaks,
                                                   monkeypatch):
    image = images.raw_fs()
    calls = fail_command(monkeypatch, 'never')
    request = inject.InjectionRequest(
        files=[('/f%d' % i, b'x') for i in range(100)])
    with pytest.raises(exception.InjectionLimit):
        api.inject_data(image, request, partition=0, handler_names=['loop'],
                        use_cow=False)
    assert 'losetup' not in calls and 'mount' not in calls
    assert not Debugfs(image).exists('/f0')


KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    from nova_ksm_inject.cmd import common
    common.load_config([sys.argv[1]])
    from nova_ksm_inject.disk import api, inject
    def die(files, request, image_desc='', conf=None):
        print('mounted', flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    api.inject.inject_data = die
    api.inject_data(sys.argv[2], inject.InjectionRequest(key='k'),
                    partition=2, handler_names=['loop'], use_cow=False)
''')


def test_cleanup_sweeps_a_killed_run(images, tmp_path, no_leaks):
    image, _offset = images.raw_mbr()
    state_dir = tmp_path / 'state'
    conf = tmp_path / 'nova.conf'
    conf.write_text('[inject]\nstate_dir = %s\n' % state_dir)
    proc = subprocess.run([sys.executable, '-c', KILLED_RUN, str(conf),
                           image], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert 'mounted' in proc.stdout
    # the journal of the dead run
    assert len(os.listdir(state_dir / 'journal')) == 1
    loops = subprocess.run(['losetup', '-j', image], capture_output=True,
                           text=True).stdout
    assert loops, 'the killed run should have left its loop device'
    cli = os.path.join(os.path.dirname(sys.executable), 'nova-ksm-inject')
    out = subprocess.run([cli, 'cleanup', '--config-file', str(conf)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'undone mount' in out.stdout and 'undone loop' in out.stdout
    assert not subprocess.run(['losetup', '-j', image], capture_output=True,
                              text=True).stdout
    assert os.listdir(state_dir / 'journal') == []
    assert os.listdir(state_dir / 'work') == []
