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


@pytest.mark.parametrize('fault', [RuntimeError('boom'), KeyboardInterrupt()])
def test_failure_during_injection_unwinds(images, no_leaks, monkeypatch,
                                          fault):
    image = images.raw_fs()

    def explode(files, request, image_desc='', conf=None):
        files.makedirs('/root/.ssh', 0o700)
        raise fault
    monkeypatch.setattr(api.inject, 'inject_data', explode)
    with pytest.raises(type(fault)):
        api.inject_data(image, inject.InjectionRequest(key=KEY), partition=0,
                        handler_names=['loop'], use_cow=False)


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
    assert len(os.listdir(state_dir)) == 1  # the journal of the dead run
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
    assert os.listdir(state_dir) == []
