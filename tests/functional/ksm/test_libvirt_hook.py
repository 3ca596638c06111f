"""The hook under a real libvirtd, with a fake KSM tree bound into its
namespace: real TCG guests start and stop, the fake tree shows what the
hook set, the host's KSM is untouched."""

import concurrent.futures
import json
import os
import time

import libvirt
import pytest

from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import settings as ksm_settings
from tests.functional.ksm import conftest


def guests(state_dir):
    path = os.path.join(state_dir, 'guests')
    if not os.path.isdir(path):
        return []
    records = []
    for name in os.listdir(path):
        with open(os.path.join(path, name)) as f:
            records.append(json.load(f))
    return records


def events(state_dir):
    with open(os.path.join(state_dir, 'events')) as f:
        return json.load(f)


def test_guest_start_and_stop_drive_ksm(ksm_saved, hooked, libvirtd):
    hooked.write(enabled='auto', policy='static', pages_to_scan=1234,
                 sleep_millisecs=35)
    daemon = libvirtd(hooked.hooks_dir, ksm='fake')
    fake = daemon.fake_ksm
    assert conftest.read_ksm('run', fake) == '0'

    started = time.monotonic()
    domain = daemon.start_domain()
    start_seconds = time.monotonic() - started
    assert conftest.read_ksm('run', fake) == '1'
    assert conftest.read_ksm('pages_to_scan', fake) == '1234'
    assert conftest.read_ksm('sleep_millisecs', fake) == '35'
    [record] = guests(hooked.state_dir)
    assert record['name'] == domain.name() and record['mergeable']
    assert record['pid']  # recorded at "started begin"
    log = hooked.log_text()
    assert 'libvirt prepare begin of guest %s' % domain.name() in log
    assert 'libvirt started begin of guest %s' % domain.name() in log
    # Two hooks ran inside that start; each stays well under a second.
    assert start_seconds < 10

    domain.destroy()
    assert conftest.read_ksm('run', fake) == '0'
    assert guests(hooked.state_dir) == []
    assert 'libvirt release end of guest' in hooked.log_text()
    assert events(hooked.state_dir)['kind'] == 'stop'
    # The host's own KSM never saw any of it.
    assert conftest.read_knobs() == ksm_saved


def test_libvirts_first_hook_run_reads_the_cache_install_hook_filled(
        ksm_saved, hooked, libvirtd):
    """install-hook read nova.conf as libvirt runs the hook (its bare
    environment, the shim's variables): the first guest's hooks find the
    cache valid and do not write it again, as a run that read nova.conf
    would."""
    cache = hooked.cache
    with open(cache) as f:
        stored = json.load(f)
    assert stored['settings']['ksm']['state_dir'] == hooked.state_dir
    written = os.stat(cache).st_mtime_ns
    daemon = libvirtd(hooked.hooks_dir, ksm='fake')
    domain = daemon.start_domain()
    assert conftest.read_ksm('run', daemon.fake_ksm) == '1'
    assert 'libvirt started begin of guest %s' % domain.name() in (
        hooked.log_text())
    domain.destroy()
    assert 'libvirt release end of guest' in hooked.log_text()
    assert os.stat(cache).st_mtime_ns == written


def test_unmergeable_guest_leaves_ksm_off(ksm_saved, hooked, libvirtd):
    hooked.write(enabled='auto', policy='static')
    daemon = libvirtd(hooked.hooks_dir, ksm='fake')
    domain = daemon.start_domain(nosharepages=True)
    assert domain.isActive()
    assert conftest.read_ksm('run', daemon.fake_ksm) == '0'
    [record] = guests(hooked.state_dir)
    assert not record['mergeable']
    assert 'nosharepages' in record['reason']


def test_enabled_false_stops_ksm_on_guest_start(ksm_saved, hooked,
                                                libvirtd):
    hooked.write(enabled='false')
    daemon = libvirtd(hooked.hooks_dir, ksm='fake')
    conftest.write_ksm('run', 1, daemon.fake_ksm)
    daemon.start_domain()
    assert conftest.read_ksm('run', daemon.fake_ksm) == '0'


def test_concurrent_starts_lose_no_guest(ksm_saved, hooked, libvirtd):
    hooked.write(enabled='auto', policy='static')
    daemon = libvirtd(hooked.hooks_dir, ksm='fake')
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        domains = list(pool.map(lambda i: daemon.start_domain(), range(3)))
    assert len(guests(hooked.state_dir)) == 3
    # prepare + started for each guest, no event lost.
    assert events(hooked.state_dir)['generation'] == 6
    assert conftest.read_ksm('run', daemon.fake_ksm) == '1'
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda d: d.destroy(), domains))
    assert guests(hooked.state_dir) == []
    assert events(hooked.state_dir)['generation'] == 9
    assert conftest.read_ksm('run', daemon.fake_ksm) == '0'


def test_read_only_ksm_never_blocks_a_guest(ksm_saved, hooked, libvirtd):
    hooked.write(enabled='true', policy='static', pages_to_scan=999)
    daemon = libvirtd(hooked.hooks_dir, ksm='fake-ro')
    before = conftest.read_knobs(daemon.fake_ksm)
    domain = daemon.start_domain()
    assert domain.isActive()
    log = hooked.log_text()
    assert 'KSM not adjusted for guest %s' % domain.name() in log
    assert 'is mounted read-only' in log
    assert conftest.read_knobs(daemon.fake_ksm) == before


def test_strict_hook_refuses_the_start(ksm_saved, hooked, libvirtd):
    hooked.write(enabled='true', policy='static', strict='true')
    daemon = libvirtd(hooked.hooks_dir, ksm='fake-ro')
    with pytest.raises(libvirt.libvirtError, match='hook'):
        daemon.start_domain()
    assert daemon.conn.listAllDomains() == []


def test_knobs_go_through_libvirt_node_memory_parameters(ksm_saved, hooked,
                                                         libvirtd):
    daemon = libvirtd(hooked.hooks_dir, ksm='fake')
    settings = ksm_settings.KsmSettings(connection_uri=daemon.uri)
    host = ksm_host.KsmHost.for_settings(settings)
    try:
        assert host.connection is not None
        wanted = {'pages_to_scan': int(ksm_saved['pages_to_scan']) + 7,
                  'sleep_millisecs': int(ksm_saved['sleep_millisecs']) + 3}
        host.apply(wanted)
        values = host.libvirt_values()
    finally:
        host.close()
    # libvirtd wrote the tree it sees; ours (the host's) is unchanged.
    for name, value in wanted.items():
        assert conftest.read_ksm(name, daemon.fake_ksm) == str(value)
        assert values['shm_' + name] == value
    assert conftest.read_knobs() == ksm_saved
