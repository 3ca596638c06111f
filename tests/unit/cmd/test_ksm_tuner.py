"""``nova-ksm-tuner``: runs until told to stop, then cleans up."""

import logging
import signal
import threading

import pytest

from nova_ksm_inject import procfs
from nova_ksm_inject.cmd import tuner as cmd_tuner
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm import statedir as ksm_statedir
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from tests.unit.ksm import conftest as ksm_fakes


@pytest.fixture
def env(tmp_path, monkeypatch):
    fake_ksm = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    fake_proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    fake_proc.add_ksmd()
    fake_proc.add(500, mergeable=True)
    monkeypatch.setattr(ksm_sysfs, 'KSM_ROOT', fake_ksm.root)
    monkeypatch.setattr(procfs, 'PROC_ROOT', fake_proc.root)
    conf = tmp_path / 'nova.conf'
    conf.write_text('[ksm]\nstate_dir = %s\nconnection_uri =\n'
                    'poll_interval = 0.1\nrestore_on_exit = true\n'
                    % (tmp_path / 'state'))
    yield fake_ksm, str(conf), tmp_path / 'state'
    CONF.reset()
    # --quiet commands lower our loggers for the whole process.
    logging.getLogger('nova_ksm_inject').setLevel(logging.NOTSET)


def test_serve_boosts_then_restores_on_stop(env):
    fake_ksm, conf, state = env
    stop = threading.Event()
    args = cmd_tuner.build_parser().parse_args(['--config-file', conf])
    thread = threading.Thread(target=cmd_tuner.serve, args=(args, stop))
    thread.start()
    statedir = ksm_statedir.KsmStateDir(str(state))
    try:
        for _ in range(100):
            if (statedir.tuner() or {}).get('state') == 'boost':
                break
            stop.wait(0.05)
        assert statedir.tuner()['state'] == 'boost'
        assert fake_ksm.get('run') == '1'
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert fake_ksm.get('run') == '0'
    assert statedir.tuner()['state'] == 'stopped'


def test_main_bad_config_exits_2(env, tmp_path, capsys, monkeypatch):
    _, conf, _ = env
    with open(conf, 'a') as f:
        f.write('cpu_budget_percent = 0\n')
    monkeypatch.setattr(signal, 'signal', lambda *a: None)
    assert cmd_tuner.main(['--config-file', conf]) == 2
    err = capsys.readouterr().err
    assert 'cpu_budget_percent' in err
