"""The tuner on older kernels, from a recording of real KSM counters.

``data/ksm-6.18-recording.json`` was recorded on the 2-core test VM
(Linux 6.18) with 4 synthetic guests of 64 MiB (85% identical pages):
every file of /sys/kernel/mm/ksm, ksmd's /proc/<pid>/stat and each
guest's KSM files, every half second, for 20 s at 3000 pages / 20 ms
(smart_scan off, so each full scan covers all memory) and then 40 s at
300 pages / 200 ms.

From it, each sample is laid out as the tree an older kernel would show:

* **6.1-like** (Debian 12): no ``pages_scanned``, ``pages_skipped``,
  ``smart_scan`` (6.7), advisor (6.8), ``general_profit`` (6.4) nor
  ``ksm_zero_pages`` (6.10); ``/proc/<pid>/ksm_stat`` holds only
  ``ksm_rmap_items`` (6.1) and ``ksm_merging_pages`` is a file (5.19).
* **5.14-like** (RHEL 9's base): the same sysfs, and no per-process KSM
  file at all: QEMU processes are found by the ``mg`` flag in ``smaps``.

The 6.18 values the older trees hide (``pages_scanned``,
``general_profit``) are the reference the tuner's estimates are checked
against.
"""

import json
import os

import pytest

from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import policy
from nova_ksm_inject.ksm import scanrate
from nova_ksm_inject.ksm import tuner as ksm_tuner
from tests.unit.ksm import conftest

RECORDING = os.path.join(os.path.dirname(__file__), 'data',
                         'ksm-6.18-recording.json')
NEWER_THAN_6_1 = ('pages_scanned', 'pages_skipped', 'smart_scan',
                  'general_profit', 'ksm_zero_pages', 'advisor_mode',
                  'advisor_max_cpu', 'advisor_min_pages_to_scan',
                  'advisor_max_pages_to_scan', 'advisor_target_scan_time')
KERNELS = ('5.14', '6.1')


@pytest.fixture(scope='module')
def recording():
    with open(RECORDING) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def replayed(recording, tmp_path_factory):
    """{kernel: [(row, Sample)]}, replayed once per module."""
    return {kernel: replay(recording, kernel,
                           tmp_path_factory.mktemp('old-kernels'))
            for kernel in KERNELS}


def lay_out(row, kernel, ksm, proc):
    """Write one recorded sample as ``kernel`` would show it."""
    for name, value in row['sysfs'].items():
        if name not in NEWER_THAN_6_1:
            ksm.set(name, value)
    proc._write(37, 'stat', row['ksmd_stat'] + '\n')
    proc._write(37, 'comm', 'ksmd\n')
    for pid, files in row['proc'].items():
        proc._write(pid, 'comm', 'qemu-system-x86\n')
        proc._write(pid, 'cmdline', 'qemu-system-x86_64\0-name\0guest=g%s\0'
                    % pid)
        proc._write(pid, 'stat', '%s (qemu-system-x86) S 1 %s\n'
                    % (pid, ' '.join(['0'] * 48)))
        proc._write(pid, 'statm', files['statm'])
        if kernel == '5.14':
            proc._write(pid, 'smaps', 'VmFlags: rd wr mr mw me ac mg\n')
            continue
        rmap = files['ksm_stat'].splitlines()[0]
        proc._write(pid, 'ksm_stat', rmap + '\n')
        proc._write(pid, 'ksm_merging_pages', files['ksm_merging_pages'])


def replay(recording, kernel, tmp_path):
    """Every recorded sample through the tuner's own reader (Tuner.sample),
    with the fake clock at the recorded time: [(row, Sample)]."""
    ksm = conftest.FakeKsm(tmp_path / kernel / 'ksm',
                           missing=NEWER_THAN_6_1)
    proc = conftest.FakeProc(tmp_path / kernel / 'proc')
    clock = conftest.FakeClock(0.0)
    lay_out(recording['samples'][0], kernel, ksm, proc)  # ksmd is found
    statedir = conftest.ksm_statedir.KsmStateDir(
        str(tmp_path / kernel / 'state'), clock=clock)
    tuner = ksm_tuner.Tuner(conftest.ksm_settings.KsmSettings(),
                            ksm_host.KsmHost(ksm.sysfs), statedir,
                            clock=clock, proc_root=proc.root)
    samples = []
    for row in recording['samples']:
        lay_out(row, kernel, ksm, proc)
        clock.now = row['t']
        samples.append((row, tuner.sample()))
    return samples


def true_rate(rows):
    """Pages per ksmd CPU second, from the hidden 6.18 counters."""
    first, last = rows[0], rows[-1]
    scanned = int(last['sysfs']['pages_scanned']) - int(
        first['sysfs']['pages_scanned'])
    return scanned / (cpu(last) - cpu(first))


def cpu(row):
    fields = row['ksmd_stat'].rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


@pytest.mark.parametrize('kernel', KERNELS)
def test_the_tuner_reads_an_old_tree(replayed, kernel):
    samples = replayed[kernel]
    row, last = samples[-1]
    assert last.pages_scanned is None
    assert last.guests == 4  # 5.14: by smaps; 6.1: ksm_merging_pages
    assert last.merged == int(row['sysfs']['pages_sharing'])
    assert last.profit_source == {
        '5.14': 'estimated from tracked pages',
        '6.1': 'estimated from ksm_rmap_items'}[kernel]
    # The estimate is the kernel's own formula: it matches 6.18's value.
    assert last.profit == int(row['sysfs']['general_profit'])


@pytest.mark.parametrize('kernel', KERNELS)
def test_rate_from_full_scans_matches_pages_scanned(replayed, kernel):
    samples = replayed[kernel]
    boost = [(r, s) for r, s in samples if r['phase'] == 'boost']
    rate = scanrate.ScanRate()
    for _, sample in boost:
        rate.observe(sample)
    assert rate.source == 'full scans'
    truth = true_rate([r for r, _ in boost])
    assert rate.rate == pytest.approx(truth, rel=0.3)


@pytest.mark.parametrize('kernel', KERNELS)
def test_settled_budget_correction_runs_without_pages_scanned(
        recording, replayed, kernel):
    """The settled ceiling is held from ksmd's measured CPU time, so it
    works without pages_scanned: the batch for 1% of a core is the
    recorded batch scaled by the recorded duty cycle."""
    samples = replayed[kernel]
    settled = [(r, s) for r, s in samples if r['phase'] == 'settled']
    pages, sleep = recording['knobs']['settled']
    rate = scanrate.ScanRate()
    rate.restart(settled[0][1], pages, sleep)
    for _, sample in settled:
        rate.observe(sample)
    assert rate.duty is not None
    rows = [r for r, _ in settled]
    duty = (cpu(rows[-1]) - cpu(rows[0])) / (rows[-1]['t'] - rows[0]['t'])
    expected = pages * 0.01 * (1 - duty) / (duty * 0.99)
    assert rate.pages_for(1.0, sleep) == pytest.approx(expected, rel=0.35)
    # The recorded 300 pages / 200 ms cost less than 1% of a core here.
    assert duty < 0.01 and rate.pages_for(1.0, sleep) > pages


@pytest.mark.parametrize('kernel', KERNELS)
def test_whole_policy_on_an_old_tree_boosts_and_settles(replayed, kernel):
    tuner = policy.AdaptivePolicy(conftest.ksm_settings.KsmSettings())
    states = [tuner.decide(sample).state for _, sample in replayed[kernel]]
    assert states[0] == policy.BOOST and states[-1] == policy.SETTLED
