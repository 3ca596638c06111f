"""The KSM benchmark's driver: refusals, lock, reset, sampling, results.

KSM and /proc are fake trees; nothing here needs root or a kernel KSM.
"""

import fcntl
import os

import pytest

from bench import ksm
from bench import ksm_policies
from bench import ksm_preflight
from bench import ksm_scenario
from bench.ksm_preflight import BenchRefused
from nova_ksm_inject import exception
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import settings as ksm_settings
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from tests.unit.ksm import conftest as ksm_fakes

SMALL = ksm_scenario.Scenario(waves=1, guests=2, guest_mib=16, duration=20)
SETTINGS = ksm_settings.KsmSettings()
ALL = list(ksm.ORDER)


@pytest.fixture
def fake_ksm(tmp_path):
    return ksm_fakes.FakeKsm(tmp_path / 'ksm')


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """ksmtuned and our console scripts present."""
    script = tmp_path / 'ksmtuned'
    script.write_text('#!/bin/sh\n')
    script.chmod(0o755)
    monkeypatch.setattr(ksm_policies, 'KSMTUNED', str(script))
    monkeypatch.setattr(ksm_policies, 'console_script',
                        lambda name: '/usr/bin/' + name)


def preflight(fake_ksm, policies=ALL, euid=0, available_mib=8192,
              scenario=SMALL):
    ksm_preflight.preflight(policies, fake_ksm.sysfs, scenario, euid=euid,
                  available_mib=available_mib)


def test_preflight_passes_on_a_full_host(fake_ksm, installed):
    preflight(fake_ksm)


def test_refuses_without_root(fake_ksm, installed):
    with pytest.raises(BenchRefused, match='must run as root'):
        preflight(fake_ksm, euid=1000)


def test_refuses_without_ksm(tmp_path, installed):
    missing = ksm_sysfs.KsmSysfs(str(tmp_path / 'no-ksm'))
    with pytest.raises(exception.KsmUnavailable) as err:
        ksm_preflight.preflight(ALL, missing, SMALL, euid=0,
                                available_mib=8192)
    assert 'no-ksm/run does not exist' in str(err.value)


def test_refuses_when_ksm_is_not_writable(fake_ksm, installed,
                                          monkeypatch):
    # Root may write anything but a read-only mount: fake the answer.
    monkeypatch.setattr(os, 'access', lambda path, mode: mode != os.W_OK)
    with pytest.raises(exception.KsmNotWritable) as err:
        preflight(fake_ksm)
    assert 'run' in str(err.value)


def test_refuses_the_advisor_on_kernels_without_it(tmp_path, installed):
    old = ksm_fakes.FakeKsm(tmp_path / 'old',
                            missing=ksm_fakes.OLD_KERNEL_MISSING)
    with pytest.raises(BenchRefused, match='drop "advisor"'):
        preflight(old)
    preflight(old, policies=['default', 'adaptive'])


def test_refuses_ksmtuned_when_not_installed(fake_ksm, installed,
                                             monkeypatch, tmp_path):
    monkeypatch.setattr(ksm_policies, 'KSMTUNED', str(tmp_path / 'none'))
    with pytest.raises(BenchRefused, match='install the ksmtuned'):
        preflight(fake_ksm)
    preflight(fake_ksm, policies=['default', 'static-max'])


def test_refuses_adaptive_without_our_console_scripts(fake_ksm, installed,
                                                      monkeypatch):
    monkeypatch.setattr(ksm_policies, 'console_script', lambda name: None)
    with pytest.raises(BenchRefused, match='nova-ksm-tuner is not'):
        preflight(fake_ksm)


def test_refuses_guests_that_do_not_fit_in_memory(fake_ksm, installed):
    big = ksm_scenario.Scenario(waves=3, guests=4, guest_mib=1024)
    # 12 GiB of guests, 1 GiB of margin, 2 GiB left to the host's others.
    with pytest.raises(BenchRefused, match='need 15360 MiB but only 8192'):
        preflight(fake_ksm, scenario=big)


def test_competing_controllers_are_found_by_command_line(tmp_path):
    proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    proc.add(10, comm='ksmtuned', cmdline=['/bin/bash', '/usr/sbin/ksmtuned'])
    proc.add(11, comm='nova-ksm-tuner', cmdline=[
        '/venv/bin/python3', '/venv/bin/nova-ksm-tuner', '--config-file'])
    proc.add(12, comm='vim', cmdline=['vim', 'ksmtuned.conf'])
    found = ksm_preflight.competing_controllers(proc.root)
    assert found == ['/bin/bash /usr/sbin/ksmtuned (pid 10)',
                     '/venv/bin/python3 /venv/bin/nova-ksm-tuner (pid 11)']


def test_lock_waits_for_a_holder_and_says_so(tmp_path):
    path = str(tmp_path / 'lock')
    said = []
    with ksm.ksm_lock(path, said.append):
        with open(path) as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert said == []
    with open(path) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        # Released from the progress callback, so the wait ends.
        with ksm.ksm_lock(path, lambda msg: (said.append(msg),
                                             fcntl.flock(holder,
                                                         fcntl.LOCK_UN))):
            pass
    assert 'Waiting for %s' % path in said[0]


def test_lock_none_means_the_caller_holds_it(tmp_path):
    with ksm.ksm_lock(None, None):
        pass


def test_reset_unmerges_then_writes_the_kernel_defaults(fake_ksm):
    for name, value in (('pages_to_scan', '1000000000'), ('run', '1'),
                        ('advisor_mode', 'none [scan-time]'),
                        ('max_page_sharing', '16')):
        fake_ksm.set(name, value)
    host = ksm_host.KsmHost(sysfs=fake_ksm.sysfs)
    ksm.reset(host)
    state = host.save()
    assert state['run'] == 0
    assert state['max_page_sharing'] == 256
    assert state['advisor_mode'] == 'none'
    # The advisor owns pages_to_scan while on; off, the default is back.
    assert state['pages_to_scan'] == 100


def test_reset_gives_up_when_pages_stay_shared(fake_ksm):
    fake_ksm.set('pages_shared', '5')
    with pytest.raises(BenchRefused, match='still shares pages'):
        ksm.reset(ksm_host.KsmHost(sysfs=fake_ksm.sysfs), timeout=0.2)


def fake_run(levels, t95_at, cpu_per_second, duration=20.0):
    """A policy run whose saving jumps to ``levels`` at ``t95_at``."""
    times = [i * 0.5 for i in range(int(duration * 2) + 1)]
    saved = [levels if t >= t95_at else 0 for t in times]
    return {'samples': {'t': times, 'saved': saved,
                        'ksmd_cpu': [t * cpu_per_second for t in times],
                        'guest_rss_pages': [0] * len(times)},
            'events': [{'time': 0.0, 'kind': 'arrive', 'wave': 1},
                       {'time': 15.0, 'kind': 'leave', 'wave': 1}],
            'report': {}, 'noise': [], 'ballast_mib': 0}


def test_results_take_the_achievable_saving_from_static_max():
    result = ksm.results(SMALL, {'static-max': fake_run(3000, 1.0, 0.9),
                                 'adaptive': fake_run(3000, 2.0, 0.05)},
                         SETTINGS)
    assert result['achievable'] == {'source': 'static-max',
                                    'pages': [3000]}
    adaptive = result['policies']['adaptive']['summary']
    assert adaptive['t95'] == 2.0
    assert adaptive['ksmd_cpu_seconds'] == 1.0
    assert [c['met'] for c in result['targets']] == [True, True]
    assert result['scenario']['expected_pages'] == [
        SMALL.identical_pages]


def test_real_guests_saving_counts_their_pages_on_the_zero_page():
    # The numbers of a real-guest run at 2577d6f (pages): static-max split
    # huge pages early and merged their zeros, the tuner split them late,
    # when more went to the zero page. Merged pages alone: 92%.
    scenario = ksm_scenario.Scenario(kind='real-guests', duration=20.0)
    static = fake_run(203771, 3.0, 1.0)
    adaptive = fake_run(186439, 5.0, 0.09)
    for run, zero in ((static, 13342), (adaptive, 33232)):
        s = run['samples']
        s['guest_zero_pages'] = [zero if v else 0 for v in s['saved']]
    result = ksm.results(scenario, {'static-max': static,
                                    'adaptive': adaptive}, SETTINGS)
    assert result['saving'] == 'freed'
    assert result['achievable']['pages'] == [203771 + 13342]
    assert result['policies']['adaptive']['summary']['t95'] == 5.0
    t95, cpu, saving = result['targets']
    assert t95['met'] and cpu['met'] and saving['met']
    assert saving['target'].endswith('(merged + zero-page pages)')
    assert saving['measured'].startswith('101% (0.838 vs 0.828 GiB')
    assert saving['measured'].endswith(
        'merged pages alone 92% (0.711 vs 0.777 GiB)')
    # Without the zero pages (a run recorded before they were sampled),
    # the saving is merged pages, and the tuner misses both targets.
    for run in (static, adaptive):
        del run['samples']['guest_zero_pages']
    result = ksm.results(scenario, {'static-max': static,
                                    'adaptive': adaptive}, SETTINGS)
    assert [c['met'] for c in result['targets']] == [False, True, False]


def test_results_without_static_max_use_the_theoretical_saving():
    result = ksm.results(SMALL, {'adaptive': fake_run(
        SMALL.identical_pages, 2.0, 0.05)}, SETTINGS)
    assert result['achievable']['source'] == 'theoretical'
    assert result['achievable']['pages'] == [SMALL.identical_pages]
    assert result['policies']['adaptive']['summary']['t95'] == 2.0


def test_ballast_keeps_the_host_short_of_memory_after_merging():
    scenario = ksm_scenario.PRESETS[ksm_scenario.PRESSURE][0]
    info = {'MemTotal': 24105 * 1024, 'MemAvailable': 22500 * 1024}
    ballast = ksm.ballast_mib(scenario, info)
    # 12 guests of 384 MiB, of which 11 x 85% merge away: 1018 MiB left.
    merged = 11 * int(384 * 256 * 0.85) * 4096 // 2 ** 20
    left = 22500 - ballast - (12 * 384 - merged)
    assert left == int(24105 * 0.15)  # 15% of RAM: under the 20% limit
    # A small host: never under the floor the ballast gives memory back at.
    small = {'MemTotal': 8192 * 1024, 'MemAvailable': 7000 * 1024}
    assert 7000 - ksm.ballast_mib(scenario, small) - (12 * 384 - merged) \
        == ksm_preflight.BALLAST_FLOOR_MIB + 512
