"""ksm status: collected figures and the three output formats."""

import json

import pytest

from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import status as ksm_status

QEMU = ['/usr/bin/qemu-system-x86_64', '-name',
        'guest=lab-1,debug-threads=on']
LAB = 'aa11aa11aa11aa11aa11aa11aa11aa11'
OTHER = 'bb22bb22bb22bb22bb22bb22bb22bb22'
INSTANCE = '6f1e9a0c-0000-4000-8000-000000000001'


def qemu(name):
    return ['/usr/bin/qemu-system-x86_64', '-name',
            'guest=%s,debug-threads=on' % name]


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
        fake_proc.set_ticks(37, procfs.CLOCK_TICKS // 10, nice=5)  # 0.1 s
    statedir.write_tuner({'state': 'settled', 'reason': 'plateau'})
    return ksm_status.collect(fake_ksm.sysfs, statedir, clock, sleeper,
                              window=0.5, proc_root=fake_proc.root)


def test_collect(collected):
    assert collected['run'] == 1
    assert collected['saved_bytes'] == 25600 * 4096
    assert collected['saved_mib'] == 100.0
    assert collected['general_profit_mib'] == 100.0
    assert collected['ksmd_cpu_percent'] == 20.0
    assert collected['ksmd_nice'] == 5
    assert collected['guests'] == [{'name': 'lab-1', 'pid': 1001,
                                    'merging_pages': 1000,
                                    'profit_bytes': 0, 'instance': None,
                                    'project': None, 'project_name': None}]
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
    assert 'ksmd CPU: 20.0% of one core, nice 5' in text
    assert 'lab-1' in text and 'settled' in text


def test_prometheus(collected):
    text = ksm_status.format_prometheus(collected)
    lines = text.splitlines()
    assert 'nova_ksm_saved_bytes %d' % (25600 * 4096) in lines
    assert '# TYPE nova_ksm_full_scans counter' in lines
    assert ('nova_ksm_guest_merging_pages{name="lab-1",pid="1001",'
            'instance="",project=""} 1000') in lines
    assert 'nova_ksm_tuner_state{state="settled"} 1' in lines
    # Every sample line is "name[{labels}] number".
    for line in lines:
        if not line.startswith('#'):
            float(line.rsplit(' ', 1)[1])


def test_prometheus_escapes_labels():
    assert ksm_status._label('a"b\\c') == 'a\\"b\\\\c'


@pytest.fixture
def owned(fake_ksm, fake_proc, statedir, clock):
    """Three nova guests of two projects, and a process nova did not
    start; the hook recorded the nova guests (one before qemu ran, so
    matched by name)."""
    fake_ksm.set('pages_sharing', 3000)
    for pid, name, merging in ((11, 'instance-00000001', 2000),
                               (12, 'instance-00000002', 1000),
                               (13, 'instance-00000003', 2000),
                               (14, 'worker', 1000)):
        fake_proc.add(pid, comm='qemu', cmdline=qemu(name), mergeable=True,
                      merging=merging)
    for pid, name, project, project_name in (
            (11, 'instance-00000001', LAB, 'lab'),
            (None, 'instance-00000002', LAB, 'lab'),
            (13, 'instance-00000003', OTHER, None)):
        statedir.record_guest({'uuid': name + '-uuid', 'name': name,
                               'pid': pid, 'mergeable': True,
                               'instance': name + '-uuid',
                               'project': project,
                               'project_name': project_name})
    return ksm_status.collect(fake_ksm.sysfs, statedir, clock, clock.sleep,
                              window=0, proc_root=fake_proc.root)


def test_guests_carry_instance_and_project(owned):
    by_name = {g['name']: g for g in owned['guests']}
    assert by_name['instance-00000002']['instance'] == \
        'instance-00000002-uuid'
    assert by_name['instance-00000002']['project'] == LAB
    assert by_name['instance-00000003']['project_name'] is None
    assert by_name['worker']['project'] is None


def test_saved_memory_is_credited_per_project(owned):
    # 6000 merged pages in all, 3000 saved: each merged page is worth half.
    assert owned['projects'] == [
        {'project': LAB, 'project_name': 'lab', 'guests': 2,
         'merging_pages': 3000, 'saved_bytes': 1500 * 4096},
        {'project': OTHER, 'project_name': None, 'guests': 1,
         'merging_pages': 2000, 'saved_bytes': 1000 * 4096},
        {'project': None, 'project_name': None, 'guests': 1,
         'merging_pages': 1000, 'saved_bytes': 500 * 4096}]
    assert sum(p['saved_bytes'] for p in owned['projects']) == \
        owned['saved_bytes']


def test_text_names_instance_and_project(owned):
    lines = ksm_status.format_text(owned).splitlines()
    [line] = [x for x in lines if x.startswith('  instance-00000001 ')]
    assert line.split()[:4] == ['instance-00000001',
                                'instance-00000001-uuid', LAB, '(lab)']
    [line] = [x for x in lines if x.startswith('  worker ')]
    assert line.split()[:3] == ['worker', '-', '-']
    assert 'Project %s (lab): 2 guests, saved 5.9 MiB' % LAB in lines
    assert 'Project %s: 1 guest, saved 3.9 MiB' % OTHER in lines
    assert 'Project (not nova): 1 guest, saved 2.0 MiB' in lines


def test_prometheus_labels_and_project_metric(owned):
    lines = ksm_status.format_prometheus(owned).splitlines()
    assert ('nova_ksm_guest_merging_pages{name="instance-00000002",pid="12",'
            'instance="instance-00000002-uuid",project="%s"} 1000' % LAB
            ) in lines
    assert ('nova_ksm_project_saved_bytes{project="%s",project_name="lab"} '
            '%d' % (LAB, 1500 * 4096)) in lines
    assert 'nova_ksm_project_saved_bytes{project="",project_name=""} %d' % (
        500 * 4096) in lines
    assert '# TYPE nova_ksm_project_saved_bytes gauge' in lines
