"""KSM that cannot be written (containers): the real sysfs bound
read-only, or no KSM at all, in a private mount namespace. One clear
message, the hook still exits 0, nothing changes."""

import os
import subprocess
import tempfile

import pytest

from tests.functional.ksm import conftest

XML = ("<domain type='qemu'><name>ro-vm</name><uuid>ro-uuid</uuid>"
       "<memory unit='MiB'>64</memory></domain>")


def in_namespace(setup, *command, stdin=None, env=None):
    """Run ``command`` after the mount ``setup`` in a private namespace."""
    script = '%s && exec "$@"' % setup
    return subprocess.run(
        ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
         script, 'sh'] + [str(c) for c in command],
        input=stdin, capture_output=True, text=True, env=env, timeout=60)


def hook_in_namespace(setup, conf, domain):
    """The hook as libvirt runs it, for a guest starting."""
    # Its settings cache in the test's directory, not under /run.
    env = dict(os.environ, NOVA_KSM_INJECT_CONFIG_FILES=conf.path,
               NOVA_KSM_INJECT_HOOK_CACHE=conf.cache)
    return in_namespace(setup, os.path.join(conftest.BIN,
                                            'nova-ksm-libvirt-hook'),
                        domain, 'prepare', 'begin', '-', stdin=XML, env=env)


READ_ONLY = ('mount --bind {ksm} {ksm} && '
             'mount -o remount,bind,ro {ksm}').format(ksm=conftest.KSM)


@pytest.fixture
def conf(tmp_path):
    class Conf(object):
        log = str(tmp_path / 'hook.log')
        cache = str(tmp_path / 'hook-settings.json')
        path = conftest.write_conf(
            tmp_path / 'nova.conf', state_dir=tmp_path / 'state',
            hook_log_file=tmp_path / 'hook.log', connection_uri='',
            enabled='true', policy='static', pages_to_scan=4321)
    return Conf()


def test_hook_on_read_only_sysfs_exits_0_and_changes_nothing(ksm_saved,
                                                             conf):
    proc = hook_in_namespace(READ_ONLY, conf, 'ro-vm')
    assert proc.returncode == 0, proc.stderr
    with open(conf.log) as f:
        log = f.read()
    assert 'KSM not adjusted for guest ro-vm' in log
    assert 'is mounted read-only' in log
    assert conftest.read_knobs() == ksm_saved


def test_commands_on_read_only_sysfs(ksm_saved, conf):
    cmd = os.path.join(conftest.BIN, 'nova-ksm-inject')
    proc = in_namespace(READ_ONLY, cmd, '--config-file', conf.path, 'ksm',
                        'enable')
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('nova-ksm-inject: error: Cannot write KSM '
                               'setting')
    assert 'read-only' in lines[0] and 'nothing was changed' in lines[0]
    assert conftest.read_knobs() == ksm_saved
    # Reading still works.
    proc = in_namespace(READ_ONLY, cmd, '--config-file', conf.path, 'ksm',
                        'status', '--window', '0.1')
    assert proc.returncode == 0, proc.stderr
    assert 'KSM:' in proc.stdout


def test_no_ksm_at_all(ksm_saved, conf):
    empty = tempfile.mkdtemp(prefix='nki-noksm-')
    try:
        hide = 'mount --bind %s %s' % (empty, conftest.KSM)
        cmd = os.path.join(conftest.BIN, 'nova-ksm-inject')
        proc = in_namespace(hide, cmd, '--config-file', conf.path, 'ksm',
                            'status')
        assert proc.returncode == 1
        assert 'KSM is not available' in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        proc = hook_in_namespace(hide, conf, 'x')
        assert proc.returncode == 0
        assert 'KSM is not available' in proc.stderr
    finally:
        os.rmdir(empty)
    assert conftest.read_knobs() == ksm_saved
