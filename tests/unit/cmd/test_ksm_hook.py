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
