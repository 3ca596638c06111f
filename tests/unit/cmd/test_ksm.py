"""``nova-ksm-inject ksm ...`` end to end against fake KSM and /proc."""

import argparse
import json
import logging
import os
import subprocess

import pytest

from nova_ksm_inject import procfs
from nova_ksm_inject.cmd import ksm as cmd_ksm
from nova_ksm_inject.cmd import main
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from tests.unit.ksm import conftest as ksm_fakes


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fake KSM and /proc trees, and a nova.conf pointing at tmp_path."""
    fake_ksm = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    fake_proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    fake_proc.add_ksmd()
    monkeypatch.setattr(ksm_sysfs, 'KSM_ROOT', fake_ksm.root)
    monkeypatch.setattr(procfs, 'PROC_ROOT', fake_proc.root)
    conf = tmp_path / 'nova.conf'
    conf.write_text('[ksm]\nstate_dir = %s\nconnection_uri =\n'
                    'policy = static\npages_to_scan = 2000\n'
                    % (tmp_path / 'state'))
    yield fake_ksm, fake_proc, str(conf)
    CONF.reset()
    # --quiet commands lower our loggers for the whole process.
    logging.getLogger('nova_ksm_inject').setLevel(logging.NOTSET)


@pytest.fixture(params=['as_root', 'privsep_wire'])
def caller(request):
    """KSM changes made as a root caller makes them (in this process) and
    as an unprivileged one (through the ``[privsep_ksm]`` entrypoints)."""
    return request.getfixturevalue(request.param)


def run(conf, *args):
    return main.main(['--config-file', conf, 'ksm'] + list(args))


def test_status_json(env, capsys):
    fake_ksm, fake_proc, conf = env
    fake_ksm.set('pages_sharing', 512)
    fake_proc.add(77, comm='qemu', cmdline=['qemu', '-name',
                                            'guest=vm-a,debug-threads=on'],
                  mergeable=True, merging=300)
    assert run(conf, 'status', '--json', '--window', '0.01') == 0
    data = json.loads(capsys.readouterr().out)
    assert data['saved_bytes'] == 512 * 4096
    assert data['guests'] == [{'name': 'vm-a', 'pid': 77,
                               'merging_pages': 300, 'profit_bytes': 0,
                               'instance': None, 'project': None,
                               'project_name': None}]
    assert data['projects'] == [{'project': None, 'project_name': None,
                                 'guests': 1, 'merging_pages': 300,
                                 'saved_bytes': 512 * 4096}]


def test_status_prometheus_to_file(env, tmp_path):
    _, _, conf = env
    out = tmp_path / 'textfile' / 'ksm.prom'
    out.parent.mkdir()
    assert run(conf, 'status', '--prometheus', '--output', str(out),
               '--window', '0.01') == 0
    assert 'nova_ksm_run 0' in out.read_text()
    assert os.listdir(out.parent) == ['ksm.prom']


def test_status_text(env, capsys):
    _, _, conf = env
    assert run(conf, 'status', '--window', '0.01') == 0
    assert 'KSM: stopped' in capsys.readouterr().out


def test_enable_disable_restore(caller, env, capsys):
    fake_ksm, _, conf = env
    assert run(conf, 'enable') == 0
    assert fake_ksm.get('run') == '1'
    assert fake_ksm.get('pages_to_scan') == '2000'
    assert run(conf, 'disable') == 0
    assert fake_ksm.get('run') == '0'
    assert run(conf, 'restore') == 0
    assert fake_ksm.get('pages_to_scan') == '100'
    assert 'KSM settings restored' in capsys.readouterr().out
    # Nothing saved any more: one clear line, exit 1.
    assert run(conf, 'restore') == 1
    assert 'No saved KSM settings' in capsys.readouterr().err


def test_apply_follows_enabled_auto(caller, env):
    fake_ksm, fake_proc, conf = env
    assert run(conf, 'apply') == 0
    assert fake_ksm.get('run') == '0'
    fake_proc.add(88, mergeable=True)
    assert run(conf, 'apply') == 0
    assert fake_ksm.get('run') == '1'


def test_apply_reports_deferred_tree_knob(caller, env, capsys):
    fake_ksm, fake_proc, conf = env
    with open(conf, 'a') as f:
        f.write('merge_across_nodes = false\n')
    fake_ksm.set('pages_shared', 5)
    assert run(conf, 'enable') == 0
    assert 'note: merge_across_nodes unchanged' in capsys.readouterr().out
    assert fake_ksm.get('merge_across_nodes') == '1'
    assert run(conf, 'enable', '--unmerge') == 0
    assert fake_ksm.get('merge_across_nodes') == '0'
    assert fake_ksm.get('run') == '1'


def test_disable_unmerge(caller, env):
    fake_ksm, _, conf = env
    assert run(conf, 'disable', '--unmerge') == 0
    assert fake_ksm.get('run') == '2'


def test_missing_ksm_is_one_line(caller, env, tmp_path, monkeypatch, capsys):
    _, _, conf = env
    monkeypatch.setattr(ksm_sysfs, 'KSM_ROOT', str(tmp_path / 'none'))
    assert run(conf, 'enable') == 1
    err = capsys.readouterr().err
    assert err.startswith('nova-ksm-inject: error: KSM is not available')
    assert len(err.strip().splitlines()) == 1


def test_read_only_sysfs_is_one_line(caller, env, monkeypatch, capsys):
    fake_ksm, _, conf = env
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode: (
        mode != os.W_OK and real_access(path, mode)))
    assert run(conf, 'enable') == 1
    assert 'Cannot write KSM setting' in capsys.readouterr().err
    assert fake_ksm.get('run') == '0'


def test_unprivileged_changes_go_through_the_ksm_context(env,
                                                         privsep_wire):
    _, _, conf = env
    for args in (['enable'], ['disable', '--unmerge'], ['restore']):
        assert run(conf, *args) == 0
    assert privsep_wire.calls == [
        'nova_ksm_inject.privsep.ksm.apply_ksm'] * 2 + [
        'nova_ksm_inject.privsep.ksm.restore_ksm']


def test_bad_option_is_rejected_with_the_range(env, capsys):
    _, _, conf = env
    with open(conf, 'a') as f:
        f.write('sleep_millisecs = 99999\n')
    assert run(conf, 'status') == 2
    err = capsys.readouterr().err
    assert 'sleep_millisecs' in err and '60000' in err


def test_install_hook(env, tmp_path, capsys, monkeypatch):
    _, _, conf = env
    cache = tmp_path / 'hook-settings.json'
    monkeypatch.setenv('NOVA_KSM_INJECT_HOOK_CACHE', str(cache))
    hooks = tmp_path / 'hooks'
    command = tmp_path / 'nova-ksm-libvirt-hook'
    command.write_text('#!/bin/sh\n')
    command.chmod(0o755)
    assert run(conf, 'install-hook', '--hooks-dir', str(hooks),
               '--hook-command', str(command)) == 0
    shim = hooks / 'qemu.d' / 'nova-ksm-inject'
    text = shim.read_text()
    assert os.access(shim, os.X_OK)
    assert "NOVA_KSM_INJECT_CONFIG_FILES=%s" % conf in text
    assert text.rstrip().endswith('exec %s "$@"' % command)
    assert 'restart libvirtd' in capsys.readouterr().out
    cache.write_text('{}')  # what the hook's first run leaves
    assert run(conf, 'install-hook', '--hooks-dir', str(hooks),
               '--remove') == 0
    assert not shim.exists()
    # The hook's settings cache goes with it.
    assert not cache.exists()
    assert 'Removed %s' % cache in capsys.readouterr().out
    assert run(conf, 'install-hook', '--hooks-dir', str(hooks),
               '--remove') == 0


def test_install_hook_fills_the_hooks_cache_first(env, tmp_path, capsys,
                                                  monkeypatch):
    """The hook reads nova.conf once, at install, as libvirt would run it
    (the shim's environment and no other), not at the first guests."""
    _, _, conf = env
    cache = tmp_path / 'cache.json'
    monkeypatch.setenv('NOVA_KSM_INJECT_HOOK_CACHE', str(cache))
    monkeypatch.setenv('OS_KSM__PAGES_TO_SCAN', '7')
    monkeypatch.setenv('PYTHONPATH', str(tmp_path / 'site'))
    monkeypatch.setenv('LANG', 'C.UTF-8')
    hooks = tmp_path / 'hooks'
    seen = tmp_path / 'seen'
    command = tmp_path / 'nova-ksm-libvirt-hook'
    command.write_text('#!/bin/sh\necho "$@" > %s; env | sort >> %s\n'
                       'echo Cached it\n' % (seen, seen))
    command.chmod(0o755)
    assert run(conf, 'install-hook', '--hooks-dir', str(hooks),
               '--hook-command', str(command)) == 0
    lines = seen.read_text().splitlines()
    assert lines[0] == '--refresh-cache'
    env_seen = dict(line.split('=', 1) for line in lines[1:])
    assert env_seen['NOVA_KSM_INJECT_CONFIG_FILES'] == str(conf)
    assert env_seen['NOVA_KSM_INJECT_HOOK_CACHE'] == str(cache)
    # The cache's key holds OS_* variables: none but the shim's reach
    # it; where Python finds its packages does.
    assert not [k for k in env_seen if k.startswith('OS_') or k == 'LANG']
    assert env_seen['PYTHONPATH'] == str(tmp_path / 'site')
    assert 'Cached it' in capsys.readouterr().out
    shim = (hooks / 'qemu.d' / 'nova-ksm-inject').read_text()
    assert "NOVA_KSM_INJECT_HOOK_CACHE=%s" % cache in shim
    # A hook that cannot read nova.conf (or write the cache) is not
    # installed: the one line says why.
    command.write_text('#!/bin/sh\necho "bad  [ksm]\n enabled" >&2\n'
                       'exit 2\n')
    (hooks / 'qemu.d' / 'nova-ksm-inject').unlink()
    assert run(conf, 'install-hook', '--hooks-dir', str(hooks),
               '--hook-command', str(command)) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith('--refresh-cache failed: bad [ksm] enabled; '
                        'nothing was installed')
    assert os.listdir(hooks / 'qemu.d') == []
    # A hook that hangs is given up on, also in one line.
    monkeypatch.setattr(cmd_ksm, 'REFRESH_TIMEOUT', 0.2)
    command.write_text('#!/bin/sh\nexec sleep 5\n')
    assert run(conf, 'install-hook', '--hooks-dir', str(hooks),
               '--hook-command', str(command)) == 1
    err = capsys.readouterr().err.strip()
    assert 'timed out after 0.2 seconds; nothing was installed' in err
    assert '\n' not in err and os.listdir(hooks / 'qemu.d') == []


def test_install_hook_remove_that_cannot_remove_the_cache_changes_nothing(
        env, tmp_path, capsys, monkeypatch):
    _, _, conf = env
    hooks = tmp_path / 'hooks'
    shim = hooks / 'qemu.d' / 'nova-ksm-inject'
    shim.parent.mkdir(parents=True)
    shim.write_text('#!/bin/sh\n')
    # A directory where the cache file should be: unlink fails (EISDIR
    # or EPERM), as it would for a root-owned cache and another user.
    cache = tmp_path / 'hook-settings.json'
    cache.mkdir()
    monkeypatch.setenv('NOVA_KSM_INJECT_HOOK_CACHE', str(cache))
    assert run(conf, 'install-hook', '--hooks-dir', str(hooks),
               '--remove') == 1
    err = capsys.readouterr().err.strip()
    assert "Cannot remove the hook's settings cache" in err
    assert 'nothing was removed' in err and '\n' not in err
    assert shim.exists() and cache.exists()


def test_hook_shim_can_name_the_settings_cache():
    """The benchmark's hooks keep their cache in its own directory."""
    text = cmd_ksm.hook_shim('/usr/bin/hook', ['/etc/nova/nova.conf'],
                             cache='/tmp/bench dir/cache.json')
    assert ("NOVA_KSM_INJECT_HOOK_CACHE='/tmp/bench dir/cache.json'\n"
            "export NOVA_KSM_INJECT_HOOK_CACHE\n") in text
    assert 'NOVA_KSM_INJECT_HOOK_CACHE' not in cmd_ksm.hook_shim(
        '/usr/bin/hook')


def test_install_hook_without_executable(env, tmp_path, capsys):
    _, _, conf = env
    assert run(conf, 'install-hook', '--hooks-dir', str(tmp_path),
               '--hook-command', str(tmp_path / 'missing')) == 1
    assert '--hook-command' in capsys.readouterr().err


def test_add_parser_standalone():
    parser = argparse.ArgumentParser()
    cmd_ksm.add_parser(parser.add_subparsers())
    args = parser.parse_args(['ksm', 'status', '--json'])
    assert args.func is cmd_ksm.cmd_status and args.json
    with pytest.raises(SystemExit):
        parser.parse_args(['ksm', 'status', '--json', '--prometheus'])


@pytest.mark.parametrize('op,subop,runs', [
    ('prepare', 'begin', True), ('start', 'begin', False),
    ('started', 'begin', True), ('stopped', 'end', False),
    ('release', 'end', True), ('migrate', 'begin', False)])
def test_shim_starts_the_hook_only_for_its_events(tmp_path, op, subop, runs):
    # The hook records its argv and stdin; the shim must pass both, or
    # read and drop the XML itself without starting the hook.
    seen = tmp_path / 'seen'
    command = tmp_path / 'hook'
    command.write_text('#!/bin/sh\necho "$@" > %s\ncat >> %s\n'
                       % (seen, seen))
    command.chmod(0o755)
    shim = tmp_path / 'shim'
    shim.write_text(cmd_ksm.hook_shim(str(command)))
    proc = subprocess.run(['sh', str(shim), 'vm1', op, subop, '-'],
                          input='<domain/>' * 10000, capture_output=True,
                          text=True, timeout=10)
    assert (proc.returncode, proc.stderr) == (0, '')
    if runs:
        assert seen.read_text().startswith('vm1 %s %s -\n<domain/>'
                                           % (op, subop))
    else:
        assert not seen.exists()


def test_shipped_shim_filters_the_same_events():
    path = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'etc',
                        'libvirt', 'hooks', 'qemu.d', 'nova-ksm-inject')
    with open(path) as f:
        shipped = f.read().splitlines()
    for line in cmd_ksm.shim_event_filter():
        assert line in shipped
