"""The benchmark's policies: knobs, ksmtuned's log and process, the
adaptive tuner's configuration and hook calls."""

import configparser
import os
import subprocess
import textwrap

import pytest

from bench import ksm
from bench import ksm_adaptive
from bench import ksm_policies
from bench import ksm_scenario
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import settings as ksm_settings
from tests.unit.ksm import conftest as ksm_fakes

# What ksmtuned writes with DEBUG=1 (`date` shortened to a time).
KSMTUNED_LOG = textwrap.dedent("""\
    12:00:00: total 24683720
    12:00:00: sleep 10
    12:00:00: thres 4936744
    12:01:00: committed 1113508 free 22528704
    12:01:00: 6050252 < 24683720 and free > 4936744, stop ksm
    12:02:00: committed 20000000 free 3000000
    12:02:00: 24936744 > 24683720, start ksm
    12:02:00: 3000000 < 4936744, boost
    12:02:00: KSMCTL start 300 10
    """).splitlines()


def test_ksmtuned_log_says_what_it_saw_and_did():
    seen = ksm_policies.parse_ksmtuned_log(KSMTUNED_LOG)
    assert (seen['total_kib'], seen['thres_kib'], seen['sleep_ms']) == (
        24683720, 4936744, 10)
    assert seen['checks'] == [
        {'committed_kib': 1113508, 'free_kib': 22528704, 'action': 'stop'},
        {'committed_kib': 20000000, 'free_kib': 3000000,
         'action': 'start 300 pages / 10 ms'}]
    assert seen['log'] == KSMTUNED_LOG


def test_ksmtuned_interval_comes_from_its_config(tmp_path):
    conf = tmp_path / 'ksmtuned.conf'
    conf.write_text('# KSM_MONITOR_INTERVAL=60\n')
    assert ksm_policies._shipped_interval(str(conf)) == 60
    conf.write_text('KSM_MONITOR_INTERVAL=15\n')
    assert ksm_policies._shipped_interval(str(conf)) == 15


@pytest.fixture
def host(tmp_path):
    fake = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    return ksm_host.KsmHost(sysfs=fake.sysfs)


@pytest.mark.parametrize('name, expected', [
    ('default', {'run': 1, 'pages_to_scan': 100, 'sleep_millisecs': 20,
                 'advisor_mode': 'none'}),
    ('static-max', {'run': 1, 'pages_to_scan': 1000000000,
                    'sleep_millisecs': 20}),
    ('advisor', {'run': 1, 'advisor_mode': 'scan-time',
                 'advisor_max_cpu': 70, 'advisor_target_scan_time': 200}),
])
def test_fixed_policies_write_their_knobs(host, tmp_path, name, expected):
    policy = ksm.POLICIES[name](host, str(tmp_path))
    policy.start()
    state = host.save()
    assert {k: state[k] for k in expected} == expected
    policy.stop()
    assert policy.report()['knobs']['run'] == 1


def test_process_cpu_counts_waited_children():
    before = ksm_policies.process_cpu(os.getpid())
    subprocess.run(['sh', '-c', 'i=0; while [ $i -lt 30000 ]; do '
                    'i=$((i+1)); done'], check=True)
    assert ksm_policies.process_cpu(os.getpid()) > before
    assert ksm_policies.process_cpu(2 ** 22 + 1) is None


FAKE_KSMTUNED = """#!/bin/sh
# Forks a loop and exits, like ksmtuned.
echo "$(date): committed 5 free 6" >> "$LOGFILE"
sh -c 'while true; do sleep 1; done' &
echo $! > "$PIDFILE"
"""


def test_ksmtuned_loop_is_started_and_stopped_by_process_group(
        host, tmp_path, monkeypatch):
    script = tmp_path / 'ksmtuned'
    script.write_text(FAKE_KSMTUNED)
    script.chmod(0o755)
    monkeypatch.setattr(ksm_policies, 'KSMTUNED', str(script))
    policy = ksm_policies.Ksmtuned(host, str(tmp_path))
    policy.start()
    assert ksm_policies._alive(policy.pid)
    policy.stop()
    assert not ksm_policies._alive(policy.pid)
    report = policy.report()
    assert report['checks'] == [{'committed_kib': 5, 'free_kib': 6}]
    assert report['controller_cpu'] is not None


def test_stopping_a_policy_that_never_started_is_harmless(host, tmp_path):
    for name in ksm.ORDER:
        policy = ksm.POLICIES[name](
            host, str(tmp_path), ksm_settings.KsmSettings())
        policy.stop()
        policy.report()


def test_adaptive_configuration_keeps_the_operators_tuning(host, tmp_path):
    settings = ksm_settings.KsmSettings(cpu_budget_percent=40,
                                        poll_interval=0.5)
    policy = ksm_adaptive.Adaptive(host, str(tmp_path), settings)
    policy._write_conf()
    conf = configparser.ConfigParser()
    conf.read(policy.conf)
    ksm = conf['ksm']
    assert ksm['cpu_budget_percent'] == '40'
    assert ksm['poll_interval'] == '0.5'
    assert ksm['policy'] == 'adaptive' and ksm['enabled'] == 'auto'
    assert ksm['state_dir'] == str(tmp_path / 'adaptive-state')
    assert ksm['connection_uri'] == ''
    assert conf['DEFAULT']['log_file'] == policy.log


def test_adaptive_delivers_hook_events_as_libvirt_does(host, tmp_path,
                                                       monkeypatch):
    # A stand-in hook that records its argv and stdin.
    hook = tmp_path / 'hook'
    hook.write_text('#!/bin/sh\necho "$@" "$NOVA_KSM_INJECT_CONFIG_FILES" '
                    '>> %s/calls\ncat >> %s/stdin\n' % (tmp_path, tmp_path))
    hook.chmod(0o755)
    monkeypatch.setattr(ksm_policies, 'console_script',
                        lambda name: str(hook))
    policy = ksm_adaptive.Adaptive(host, str(tmp_path),
                                   ksm_settings.KsmSettings())
    policy._write_conf()
    policy._install_hook()
    policy.stderr = open(os.devnull, 'w')
    guest = ksm_scenario.Guest(name='bench-w1-g1', wave=1, tag=1, mib=64)
    try:
        policy.guest_starting(guest)
        policy.guest_started(guest)
        policy.guest_stopped(guest)
    finally:
        policy.stderr.close()
    calls = (tmp_path / 'calls').read_text().splitlines()
    # The cache filled first, as install-hook does; then every event
    # through the shim, which ends those the hook ignores in sh.
    assert calls == ['--refresh-cache %s' % policy.conf] + [
        'bench-w1-g1 %s - %s' % (event, policy.conf)
        for event in ('prepare begin', 'started begin', 'release end')]
    assert (tmp_path / 'stdin').read_text() == guest.xml() * 3
    assert len(policy.hooks) == 5
    assert all(h['seconds'] >= 0 and h['cpu'] >= 0 for h in policy.hooks)


def test_adaptive_says_why_the_tuner_did_not_start(host, tmp_path,
                                                   monkeypatch):
    tuner = tmp_path / 'tuner'
    tuner.write_text('#!/bin/sh\necho "no such option --bogus" >&2\n'
                     'exit 2\n')
    tuner.chmod(0o755)
    hook = tmp_path / 'hook'
    hook.write_text('#!/bin/sh\n')
    hook.chmod(0o755)
    monkeypatch.setattr(ksm_policies, 'console_script', lambda name: str(
        tuner if name == 'nova-ksm-tuner' else hook))
    policy = ksm_adaptive.Adaptive(host, str(tmp_path),
                                   ksm_settings.KsmSettings())
    with pytest.raises(ksm_scenario.BenchFailed) as err:
        policy.start()
    assert 'nova-ksm-tuner did not start within 30 s: no such option' in (
        str(err.value))
    policy.stop()


def test_adaptive_says_why_the_hook_cannot_run(host, tmp_path, monkeypatch):
    hook = tmp_path / 'hook'
    hook.write_text('#!/bin/sh\necho "cannot write the settings cache" >&2'
                    '\nexit 2\n')
    hook.chmod(0o755)
    monkeypatch.setattr(ksm_policies, 'console_script',
                        lambda name: str(hook))
    policy = ksm_adaptive.Adaptive(host, str(tmp_path),
                                   ksm_settings.KsmSettings())
    with pytest.raises(ksm_scenario.BenchFailed) as err:
        policy.start()
    assert 'cannot write the settings cache' in str(err.value)
    assert policy.proc is None  # no tuner started
    policy.stop()
