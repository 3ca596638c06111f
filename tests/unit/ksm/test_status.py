"""ksm status: collected figures and the three output formats."""

import json

import pytest

from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import status as ksm_status

QEMU = ['/usr/bin/qemu-system-x86_64', '-name',
        'guest=lab-1,debug-threads=on']


@pytest.fixture
def collected(fake_ksm, fake_proc, statedir, clock):
    fake_ksm.set('run', 1)
    fake_ksm.set('pages_sharing', 25600)
    fake_ksm.set('pages_shared', 256)
    fake_ksm.set('general_profit', 100 * 1024 * 1024)
    fake_proc.add(1001, comm='qemu-system-x86', cmdline=QEMU,
                  mergeable=True, merging=1000)
    fake_proc.add(1002, comm='python3')

    def sleeper(seconds):
        clock.sleep(seconds)
        fake_proc.set_ticks(37, procfs.CLOCK_TICKS // 10)  # 0.1 s
    statedir.write_tuner({'state': 'settled', 'reason': 'plateau'})
    return ksm_status.collect(fake_ksm.sysfs, statedir, clock, sleeper,
                              window=0.5, proc_root=fake_proc.root)


def test_collect(collected):
    assert collected['run'] == 1
    assert collected['saved_bytes'] == 25600 * 4096
    assert collected['saved_mib'] == 100.0
    assert collected['general_profit_mib'] == 100.0
    assert collected['ksmd_cpu_percent'] == 20.0
    assert collected['guests'] == [{'name': 'lab-1', 'pid': 1001,
                                    'merging_pages': 1000,
                                    'profit_bytes': 0}]
    assert collected['tuner']['state'] == 'settled'


def test_json_has_the_contract_keys(collected):
    data = json.loads(json.dumps(collected))
    for key in ('run', 'pages_to_scan', 'sleep_millisecs', 'pages_shared',
                'pages_sharing', 'saved_bytes', 'ksmd_cpu_percent',
                'guests'):
        assert key in data
    assert set(data['guests'][0]) >= {'name', 'pid', 'merging_pages'}


def test_text(collected):
    text = ksm_status.format_text(collected)
    assert 'KSM: running' in text
    assert 'Saved: 100.0 MiB' in text
    assert 'lab-1' in text and 'settled' in text


def test_prometheus(collected):
    text = ksm_status.format_prometheus(collected)
    lines = text.splitlines()
    assert 'nova_ksm_saved_bytes %d' % (25600 * 4096) in lines
    assert '# TYPE nova_ksm_full_scans counter' in lines
    assert 'nova_ksm_guest_merging_pages{name="lab-1",pid="1001"} 1000' \
        in lines
    assert 'nova_ksm_tuner_state{state="settled"} 1' in lines
    # Every sample line is "name[{labels}] number".
    for line in lines:
        if not line.startswith('#'):
            float(line.rsplit(' ', 1)[1])


def test_prometheus_escapes_labels():
    assert ksm_status._label('a"b\\c') == 'a\\"b\\\\c'
