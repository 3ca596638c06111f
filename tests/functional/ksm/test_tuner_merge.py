"""The adaptive tuner on the real kernel KSM: processes with identical
MADV_MERGEABLE memory get merged, the tuner settles, ``ksm status`` shows
it, and SIGTERM restores what was there before.

The kernel's own counters are the verifier: /proc/<pid>/ksm_merging_pages
of our processes and ksmd's CPU time in /proc/<ksmd>/stat.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.functional.ksm import conftest
from tests.functional.ksm import workload

COUNT, MIB, IDENTICAL = 4, 48, 0.9


def tuner_state(state_dir):
    try:
        with open(os.path.join(state_dir, 'tuner')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


@pytest.fixture
def tuner(tmp_path, ksm_saved):
    """A real ``nova-ksm-tuner`` process; stopped with SIGTERM after."""
    state_dir = str(tmp_path / 'state')
    log = str(tmp_path / 'tuner.log')
    conf = conftest.write_conf(
        tmp_path / 'nova.conf', state_dir=state_dir, connection_uri='',
        poll_interval=0.5, cpu_budget_percent=50, restore_on_exit='true')
    with open(conf, 'a') as f:
        f.write('[DEFAULT]\nlog_file = %s\n' % log)
    proc = subprocess.Popen([os.path.join(conftest.BIN, 'nova-ksm-tuner'),
                             '--config-file', conf],
                            stderr=subprocess.PIPE, text=True)
    conftest.wait_for(lambda: tuner_state(state_dir), 30,
                      what='the tuner to publish its state')

    class Tuner(object):
        pass
    t = Tuner()
    t.proc, t.conf, t.state_dir, t.log = proc, conf, state_dir, log
    try:
        yield t
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        proc.stderr.close()


def settled(state_dir):
    """The tuner says settled and the kernel shows its calm knobs."""
    return (tuner_state(state_dir).get('state') == 'settled'
            and conftest.read_ksm('sleep_millisecs') == '200'
            and int(conftest.read_ksm('pages_to_scan')) < 1000)


def merged_fraction(load):
    return min(conftest.merging_pages(pid) for pid in load.pids) / float(
        load.identical_pages)


def test_tuner_merges_settles_and_restores(tuner, ksm_saved):
    cpu_before = conftest.ksmd_cpu_seconds()
    with workload.Workload(COUNT, MIB, IDENTICAL) as load:
        ready = time.monotonic()
        conftest.wait_for(lambda: merged_fraction(load) >= 0.95, 60,
                          what='95% of the identical pages to merge')
        merge_seconds = time.monotonic() - ready
        # Settled: long sleeps, small batches, next to no CPU.
        conftest.wait_for(lambda: settled(tuner.state_dir), 60,
                          what='the tuner to settle')
        settle_cpu = conftest.ksmd_cpu_seconds() - cpu_before
        others = conftest.mergeable_pids() - set(load.pids)
        cpu_start = conftest.ksmd_cpu_seconds()
        time.sleep(3)
        settled_percent = (conftest.ksmd_cpu_seconds() - cpu_start) / 3 * 100
        others |= conftest.mergeable_pids() - set(load.pids)
        if not others:
            # (Other mergeable processes, e.g. a libguestfs appliance of a
            # parallel run, would make the tuner boost for them.)
            assert settled_percent < 5

        proc = conftest.cli('nova-ksm-inject', '--config-file', tuner.conf,
                            'ksm', 'status', '--json', '--window', '0.2')
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        ours = {g['pid']: g for g in status['guests']
                if g['pid'] in load.pids}
        assert set(ours) == set(load.pids)
        for guest in ours.values():
            assert guest['merging_pages'] >= 0.95 * load.identical_pages
        assert status['run'] == 1
        assert status['saved_bytes'] >= (0.95 * load.expected_sharing
                                         * workload.PAGE_SIZE)
        # Other mergeable processes (a parallel test's libguestfs
        # appliance) may have made the tuner boost again meanwhile.
        assert status['tuner']['state'] in (
            ('settled', 'boost') if others else ('settled',))
        print('\nmerged 95%% of %d x %d MiB in %.2f s; ksmd used %.2f CPU '
              's until settled, %.1f%% once settled'
              % (COUNT, MIB, merge_seconds, settle_cpu, settled_percent))

        proc = conftest.cli('nova-ksm-inject', '--config-file', tuner.conf,
                            'ksm', 'status', '--prometheus', '--window',
                            '0.1')
        assert 'nova_ksm_guest_merging_pages{name="python' in proc.stdout

    if not conftest.mergeable_pids():
        # Nothing else on this host wants merging: ksmd stops (auto).
        conftest.wait_for(
            lambda: tuner_state(tuner.state_dir).get('state') == 'idle',
            30, what='the tuner to go idle')
        assert conftest.read_ksm('run') == '0'

    tuner.proc.send_signal(signal.SIGTERM)
    assert tuner.proc.wait(timeout=30) == 0
    assert conftest.read_knobs() == ksm_saved
    with open(tuner.log) as f:
        log = f.read()
    assert 'KSM boost: guest started' in log
    assert 'KSM settled: plateau' in log


def test_tuner_with_static_policy_keeps_operator_knobs(tmp_path, ksm_saved):
    conf = conftest.write_conf(
        tmp_path / 'nova.conf', state_dir=tmp_path / 'state',
        connection_uri='', poll_interval=0.2, policy='static',
        pages_to_scan=int(ksm_saved['pages_to_scan']) + 11,
        enabled='true')
    proc = subprocess.Popen([os.path.join(conftest.BIN, 'nova-ksm-tuner'),
                             '--config-file', conf],
                            stderr=subprocess.DEVNULL)
    try:
        conftest.wait_for(lambda: conftest.read_ksm('run') == '1', 30,
                          what='ksmd to run')
        assert conftest.read_ksm('pages_to_scan') == str(
            int(ksm_saved['pages_to_scan']) + 11)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
