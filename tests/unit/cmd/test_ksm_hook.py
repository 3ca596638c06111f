"""``nova-ksm-libvirt-hook``: exit 0 whatever happens, unless strict."""

import io
import logging
import os
import subprocess
import sys

import pytest

from nova_ksm_inject import procfs
from nova_ksm_inject.cmd import hook as cmd_hook
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from tests.unit.ksm import conftest as ksm_fakes

XML = ("<domain type='qemu'><name>vm1</name><uuid>u-1</uuid>"
       "<memory unit='MiB'>64</memory></domain>")


@pytest.fixture
def env(tmp_path, monkeypatch):
    fake_ksm = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    fake_proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    monkeypatch.setattr(ksm_sysfs, 'KSM_ROOT', fake_ksm.root)
    monkeypatch.setattr(procfs, 'PROC_ROOT', fake_proc.root)
    conf = tmp_path / 'nova.conf'
    conf.write_text('[ksm]\nstate_dir = %s\npolicy = static\n'
                    'hook_log_file = %s\n'
                    % (tmp_path / 'state', tmp_path / 'hook.log'))
    monkeypatch.setenv('NOVA_KSM_INJECT_CONFIG_FILES', str(conf))
    monkeypatch.setenv('NOVA_KSM_INJECT_HOOK_CACHE',
                       str(tmp_path / 'hook-cache.json'))
    logging.getLogger('nova_ksm_inject').setLevel(logging.NOTSET)
    yield fake_ksm, conf
    CONF.reset()
    # --quiet commands lower our loggers for the whole process.
    logging.getLogger('nova_ksm_inject').setLevel(logging.NOTSET)


def hook(monkeypatch, *argv, xml=XML):
    monkeypatch.setattr(sys, 'stdin', io.StringIO(xml))
    try:
        return cmd_hook.main(list(argv))
    finally:
        import signal
        signal.alarm(0)


def test_start_and_release(env, monkeypatch, tmp_path):
    fake_ksm, _ = env
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    assert fake_ksm.get('run') == '1'
    assert hook(monkeypatch, 'vm1', 'release', 'end', '-') == 0
    assert fake_ksm.get('run') == '0'
    log = (tmp_path / 'hook.log').read_text()
    assert 'libvirt prepare begin of guest vm1' in log


def test_ignored_operation_reads_no_config(env, monkeypatch):
    _, conf = env
    conf.write_text('[ksm]\nenabled = maybe\n')
    assert hook(monkeypatch, 'vm1', 'start', 'begin', '-') == 0


def test_bad_config_still_exits_0(env, monkeypatch, capsys):
    fake_ksm, conf = env
    conf.write_text('[ksm]\nenabled = maybe\n')
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    assert 'enabled' in capsys.readouterr().err
    assert fake_ksm.get('run') == '0'


def test_unwritable_sysfs_exits_0_and_logs(env, monkeypatch, tmp_path):
    fake_ksm, _ = env
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode: (
        mode != os.W_OK and real_access(path, mode)))
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    log = (tmp_path / 'hook.log').read_text()
    assert 'KSM not adjusted for guest vm1' in log
    assert 'Cannot write KSM setting' in log
    assert fake_ksm.get('run') == '0'


def test_strict_makes_errors_fatal(env, monkeypatch):
    _, conf = env
    with open(conf, 'a') as f:
        f.write('strict = true\n')
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-',
                xml='<not xml') == 1


def test_broken_xml_is_not_fatal(env, monkeypatch, tmp_path):
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-',
                xml='<not xml') == 0
    assert 'KSM hook failed' in (tmp_path / 'hook.log').read_text()


def test_too_few_arguments(monkeypatch):
    assert hook(monkeypatch) == 0


def test_console_script_ignores_other_operations_fast(tmp_path):
    """The real executable, as libvirt runs it, for an ignored event."""
    env = dict(os.environ, NOVA_KSM_INJECT_CONFIG_FILES=str(
        tmp_path / 'missing.conf'))
    proc = subprocess.run(
        [sys.executable, '-m', 'nova_ksm_inject.cmd.hook', 'vm1', 'stopped',
         'end', '-'], input=XML, capture_output=True, text=True, env=env,
        timeout=30)
    assert (proc.returncode, proc.stderr) == (0, '')


def test_second_run_uses_the_cache_and_sees_changes(env, monkeypatch,
                                                     tmp_path):
    fake_ksm, conf = env
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    cache = tmp_path / 'hook-cache.json'
    assert '"pages_to_scan": 100' in cache.read_text()
    # A cached run reads no config file: prove it with one that would fail.
    loads = []
    monkeypatch.setattr(cmd_hook, '_load_full', loads.append)
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    assert loads == []
    assert (tmp_path / 'hook.log').read_text().count(
        'libvirt prepare begin of guest vm1') == 2


def test_changed_config_file_is_read_again(env, monkeypatch, tmp_path):
    fake_ksm, conf = env
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    assert fake_ksm.get('pages_to_scan') == '100'
    with open(conf, 'a') as f:
        f.write('pages_to_scan = 777\nenabled = true\n')
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    assert fake_ksm.get('pages_to_scan') == '777'
    assert '"pages_to_scan": 777' in (tmp_path / 'hook-cache.json'
                                      ).read_text()


def test_untrusted_or_foreign_cache_is_ignored(env, monkeypatch, tmp_path):
    fake_ksm, conf = env
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    cache = tmp_path / 'hook-cache.json'
    # Someone else could have written a group-writable file.
    cache.write_text(cache.read_text().replace('"pages_to_scan": 100',
                                               '"pages_to_scan": 9'))
    os.chmod(cache, 0o664)
    assert hook(monkeypatch, 'vm1', 'prepare', 'begin', '-') == 0
    assert fake_ksm.get('pages_to_scan') == '100'
    # Written by another version with other fields: read nova.conf.
    cache.write_text(cache.read_text().replace('"strict"', '"old_field"'))
    os.chmod(cache, 0o644)
    assert cmd_hook._cached_settings(_key()) is None


def _key():
    from nova_ksm_inject.ksm.hook import settings_cache
    return settings_cache.identity(settings_cache.config_files())


CACHED_RUN = """
import json, sys
from nova_ksm_inject.cmd import hook
seen = []
hook._handle = lambda argv, xml, settings: seen.append(settings)
rc = hook.main(['vm1', 'prepare', 'begin', '-'])
if '--modules' in sys.argv:
    # What _handle imports, after the cached path set up its logging.
    import nova_ksm_inject.ksm.hook.handler, nova_ksm_inject.ksm.host
    import nova_ksm_inject.ksm.statedir, nova_ksm_inject.ksm.control
print(json.dumps({'rc': rc, 'pages': seen[0].pages_to_scan,
                  'logging': 'logging' in sys.modules,
                  # inspect (and the ast it imports) loads on first use only
                  'inspect': 'ast' in sys.modules,
                  'etree': 'xml.etree' in sys.modules,
                  'oslo': sorted(m for m in sys.modules
                                 if m.startswith('oslo_'))}))
"""


def _run_script(tmp_path, *args):
    env = dict(os.environ,
               NOVA_KSM_INJECT_CONFIG_FILES=str(tmp_path / 'nova.conf'),
               NOVA_KSM_INJECT_HOOK_CACHE=str(tmp_path / 'cache.json'))
    proc = subprocess.run([sys.executable, '-c', CACHED_RUN] + list(args),
                          input=XML, capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    import json
    return json.loads(proc.stdout)


def test_cached_run_imports_no_oslo_and_no_logging(tmp_path):
    (tmp_path / 'nova.conf').write_text(
        '[ksm]\npages_to_scan = 4321\nstate_dir = %s\n' % tmp_path)
    first = _run_script(tmp_path)
    assert 'oslo_config' in first['oslo'] and first['pages'] == 4321
    second = _run_script(tmp_path, '--modules')
    # The hook's stand-in for oslo_log is all there is of oslo, and not
    # even the logging module is loaded.
    assert second == {'rc': 0, 'pages': 4321, 'logging': False,
                      'inspect': False, 'etree': False,
                      'oslo': ['oslo_log', 'oslo_log.log']}


def test_cached_run_does_not_import_tempfile(tmp_path):
    # The state directory writes its files without tempfile (4 ms).
    env = dict(os.environ,
               NOVA_KSM_INJECT_CONFIG_FILES=str(tmp_path / 'nova.conf'),
               NOVA_KSM_INJECT_HOOK_CACHE=str(tmp_path / 'cache.json'))
    code = ("import sys; from nova_ksm_inject.ksm.hook import fast_start; "
            "fast_start.install_logging(fast_start.Sink()); "
            "from nova_ksm_inject.ksm import statedir; "
            "statedir.KsmStateDir(sys.argv[1])._write_json('x', {'a': 1}); "
            "print('tempfile' in sys.modules)")
    proc = subprocess.run([sys.executable, '-c', code, str(tmp_path / 's')],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout == 'False\n', proc.stderr
    assert (tmp_path / 's' / 'x').read_text() == '{"a": 1}'
    assert oct((tmp_path / 's' / 'x').stat().st_mode & 0o777) == '0o644'
    assert sorted(os.listdir(tmp_path / 's')) == ['guests', 'x']


def test_refresh_cache_writes_what_the_next_run_reads(env, monkeypatch,
                                                       tmp_path, capsys):
    _, conf = env
    with open(conf, 'a') as f:
        f.write('pages_to_scan = 4242\n')
    # No XML on stdin: the option must not wait for one.
    monkeypatch.setattr(sys, 'stdin', None)
    assert cmd_hook.main(['--refresh-cache']) == 0
    cache = tmp_path / 'hook-cache.json'
    out = capsys.readouterr().out
    assert out == 'Cached the [ksm] settings of %s in %s\n' % (conf, cache)
    settings, _ = cmd_hook._cached_settings(_key())
    assert settings.pages_to_scan == 4242


def test_refresh_cache_with_bad_config_fails_in_one_line(env, monkeypatch,
                                                          tmp_path, capsys):
    _, conf = env
    conf.write_text('[ksm]\nenabled = maybe\n')
    monkeypatch.setattr(sys, 'stdin', None)
    assert cmd_hook.main(['--refresh-cache']) == 2
    err = capsys.readouterr().err
    assert err.startswith('nova-ksm-libvirt-hook: error: ')
    assert 'enabled' in err and err.count('\n') == 1
    assert not (tmp_path / 'hook-cache.json').exists()


def test_refresh_cache_that_cannot_write_says_where(env, monkeypatch,
                                                     tmp_path, capsys):
    (tmp_path / 'hook-cache.json').mkdir()  # os.replace onto it fails
    monkeypatch.setattr(sys, 'stdin', None)
    assert cmd_hook.main(['--refresh-cache']) == 2
    err = capsys.readouterr().err
    assert 'cannot write the settings cache %s' % (
        tmp_path / 'hook-cache.json') in err
    assert 'NOVA_KSM_INJECT_HOOK_CACHE' in err and err.count('\n') == 1
    assert os.listdir(tmp_path / 'hook-cache.json') == []
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


def test_refresh_cache_is_only_the_whole_argument_list(env, monkeypatch):
    """libvirt passes four arguments: a domain named --refresh-cache is a
    domain."""
    loads = []
    monkeypatch.setattr(cmd_hook, 'refresh_cache', lambda: loads.append(1))
    assert hook(monkeypatch, '--refresh-cache', 'prepare', 'begin',
                '-') == 0
    assert loads == []
