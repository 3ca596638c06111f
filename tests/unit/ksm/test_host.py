"""KsmHost: all-or-nothing writes, tree knobs, the advisor, libvirt."""

import os

import libvirt
import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.ksm import host as ksm_host


class FakeConnection(object):
    """The node memory parameter calls of a libvirt connection."""

    def __init__(self, fake_ksm, error=None, alive=True):
        self.fake_ksm = fake_ksm
        self.error = error
        self.alive = alive
        self.calls = []

    def isAlive(self):
        return self.alive

    def close(self):
        self.alive = False

    def setMemoryParameters(self, params, flags):
        self.calls.append(dict(params))
        if self.error:
            raise libvirt.libvirtError(self.error)
        for name, value in params.items():
            self.fake_ksm.set(name[len('shm_'):], value)

    def getMemoryParameters(self, flags):
        return {'shm_pages_to_scan': int(self.fake_ksm.get('pages_to_scan'))}


@pytest.fixture
def host(fake_ksm):
    return ksm_host.KsmHost(fake_ksm.sysfs)


def test_apply_writes_only_changes(host, fake_ksm):
    assert host.apply({'pages_to_scan': 100, 'sleep_millisecs': 50,
                       'run': 1}) == []
    assert fake_ksm.get('sleep_millisecs') == '50'
    assert fake_ksm.get('run') == '1'


def test_apply_skips_knobs_the_kernel_lacks(host, fake_ksm):
    os.unlink(os.path.join(fake_ksm.root, 'use_zero_pages'))
    host.apply({'use_zero_pages': 1, 'run': 1})
    assert fake_ksm.get('run') == '1'
    assert not os.path.exists(os.path.join(fake_ksm.root, 'use_zero_pages'))


def test_apply_rejects_bad_values_before_writing(host, fake_ksm):
    with pytest.raises(exception.ConfigError):
        host.apply({'run': 1, 'sleep_millisecs': -1})
    assert fake_ksm.get('run') == '0'


def test_failed_write_rolls_back_earlier_ones(host, fake_ksm):
    # run is written last; make it fail after pages_to_scan was written.
    os.unlink(os.path.join(fake_ksm.root, 'run'))
    os.mkdir(os.path.join(fake_ksm.root, 'run'))
    host.sysfs.writable_state = lambda: {'pages_to_scan': 100, 'run': 0}
    host.sysfs.check_writable = lambda names: None
    with pytest.raises(exception.KsmNotWritable):
        host.apply({'pages_to_scan': 9999, 'run': 1})
    assert fake_ksm.get('pages_to_scan') == '100'


def test_read_only_changes_nothing(host, fake_ksm, monkeypatch):
    monkeypatch.setattr(os, 'access', lambda path, mode: False)
    with pytest.raises(exception.KsmNotWritable):
        host.apply({'pages_to_scan': 9999, 'run': 1})
    assert fake_ksm.get('pages_to_scan') == '100'


def test_tree_knob_deferred_while_pages_shared(host, fake_ksm):
    fake_ksm.set('pages_shared', 10)
    deferred = host.apply({'merge_across_nodes': 0, 'run': 1})
    assert [name for name, _ in deferred] == ['merge_across_nodes']
    assert '--unmerge' in deferred[0][1]
    assert fake_ksm.get('merge_across_nodes') == '1'
    assert fake_ksm.get('run') == '1'


def test_tree_knob_changes_when_nothing_shared(host, fake_ksm):
    assert host.apply({'max_page_sharing': 512}) == []
    assert fake_ksm.get('max_page_sharing') == '512'


def test_unmerge_then_change_then_run_again(host, fake_ksm):
    fake_ksm.set('pages_shared', 10)
    fake_ksm.set('run', 1)
    writes = []
    real_write = host.sysfs.write

    def record(name, value):
        writes.append((name, str(value)))
        real_write(name, value)
    host.sysfs.write = record
    assert host.apply({'merge_across_nodes': 0}, unmerge=True) == []
    assert writes == [('run', '2'), ('merge_across_nodes', '0'),
                      ('run', '1')]


def test_advisor_off_before_manual_pages_to_scan(host, fake_ksm):
    fake_ksm.set('advisor_mode', 'none [scan-time]')
    order = ksm_host.KsmHost._write_order(
        {'pages_to_scan': '5', 'advisor_mode': 'none', 'run': '1'},
        {'advisor_mode': 'scan-time'})
    assert order == ['advisor_mode', 'pages_to_scan', 'run']


def test_advisor_on_last_and_owns_pages_to_scan():
    wanted = {'pages_to_scan': '5', 'advisor_mode': 'scan-time',
              'advisor_max_cpu': '30', 'run': '1'}
    order = ksm_host.KsmHost._write_order(wanted, {'advisor_mode': 'none'})
    assert order == ['advisor_max_cpu', 'advisor_mode', 'run']
    assert 'pages_to_scan' not in wanted


def test_save_and_restore(host, fake_ksm):
    saved = host.save()
    host.apply({'pages_to_scan': 4000, 'sleep_millisecs': 5, 'run': 1})
    host.restore(saved)
    assert host.save() == saved


def test_libvirt_takes_the_knobs_it_supports(fake_ksm):
    conn = FakeConnection(fake_ksm)
    host = ksm_host.KsmHost(fake_ksm.sysfs, conn)
    host.apply({'pages_to_scan': 777, 'run': 1})
    assert conn.calls == [{'shm_pages_to_scan': 777}]
    assert fake_ksm.get('pages_to_scan') == '777'
    assert fake_ksm.get('run') == '1'  # run is never a libvirt parameter
    assert host.libvirt_values() == {'shm_pages_to_scan': 777}


def test_libvirt_failure_falls_back_to_sysfs(fake_ksm):
    conn = FakeConnection(fake_ksm, error='unsupported')
    host = ksm_host.KsmHost(fake_ksm.sysfs, conn)
    host.apply({'sleep_millisecs': 33})
    assert fake_ksm.get('sleep_millisecs') == '33'


def test_libvirt_busy_is_ksm_busy(fake_ksm):
    conn = FakeConnection(fake_ksm, error='Device or resource busy')
    host = ksm_host.KsmHost(fake_ksm.sysfs, conn)
    with pytest.raises(exception.KsmBusy):
        host.apply({'merge_across_nodes': 0})


def test_open_libvirt_failure_means_sysfs(caplog):
    assert ksm_host.open_libvirt('') is None
    assert ksm_host.open_libvirt('bogus:///nowhere') is None
    assert 'through sysfs' in caplog.text


def test_lost_connection_falls_back_then_reconnects(fake_ksm, clock,
                                                    monkeypatch):
    dead = FakeConnection(fake_ksm, error='Cannot write data', alive=False)
    host = ksm_host.KsmHost(fake_ksm.sysfs, dead, uri='qemu:///system',
                            clock=clock)
    host.apply({'pages_to_scan': 300})
    assert fake_ksm.get('pages_to_scan') == '300'
    assert host.connection is None
    fresh = FakeConnection(fake_ksm)
    monkeypatch.setattr(ksm_host, 'open_libvirt', lambda uri: fresh)
    host.apply({'pages_to_scan': 400})  # too soon to retry
    assert fresh.calls == []
    clock.sleep(ksm_host.KsmHost.RECONNECT_SECONDS)
    host.apply({'pages_to_scan': 500})
    assert fresh.calls == [{'shm_pages_to_scan': 500}]


def test_for_settings_without_uri_is_sysfs_only(settings):
    host = ksm_host.KsmHost.for_settings(settings)
    assert host.connection is None and host.uri is None
