"""What the benchmark samples, from fake KSM and /proc trees."""

import os

from bench import ksm_sampler
from nova_ksm_inject import procfs
from tests.unit.ksm import conftest as ksm_fakes


def test_sampler_reads_counters_ksmd_and_guests(tmp_path, monkeypatch):
    fake_ksm = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    proc.add_ksmd(pid=37, ticks=100)
    proc.add(500, mergeable=True, merging=40, rss_pages=70)
    proc.add(501, mergeable=True, merging=2, rss_pages=30)
    monkeypatch.setattr(procfs, 'PROC_ROOT', proc.root)
    fake_ksm.set('pages_sharing', '1234')
    fake_ksm.set('pages_shared', '12')
    clock = ksm_fakes.FakeClock(start=50.0)
    sampler = ksm_sampler.Sampler(fake_ksm.sysfs, 37,
                                  lambda: {'a': 500, 'b': 501},
                                  t0=48.0, clock=clock,
                                  state=lambda: 'boost')
    proc.set_ticks(37, 250)
    sampler.take()
    columns = sampler.columns
    assert columns['t'] == [2.0]
    # The guests' 42 merged pages map 12 KSM pages: 30 pages saved.
    assert columns['saved'] == [30]
    assert columns['pages_sharing'] == [1234]
    assert columns['ksmd_cpu'] == [150 / os.sysconf('SC_CLK_TCK')]
    assert columns['guest_merging'] == [42]
    assert columns['guest_rss_pages'] == [100]
    assert columns['pages_to_scan'] == [100]
    assert columns['state'] == ['boost']


def test_saved_drops_as_soon_as_guests_exit(tmp_path, monkeypatch):
    # pages_sharing still counts exited guests until ksmd rescans them.
    fake_ksm = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    fake_ksm.set('pages_sharing', '300')
    fake_ksm.set('pages_shared', '100')
    proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    proc.add_ksmd(pid=37)
    monkeypatch.setattr(procfs, 'PROC_ROOT', proc.root)
    sampler = ksm_sampler.Sampler(fake_ksm.sysfs, 37, dict, t0=0.0)
    sampler.take()
    assert sampler.columns['saved'] == [0]




class Launcher(object):
    def pids(self):
        return {'bench-w1-g1': 500}


def test_noise_is_other_mergeable_processes_seen_before_or_after(
        tmp_path, monkeypatch):
    proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    proc.add(500, mergeable=True)
    proc.add(600, comm='qemu-system-x86', mergeable=True,
             cmdline=['/usr/bin/qemu-system-x86_64', '-name',
                      'guest=appliance,debug-threads=on'])
    proc.add(700, comm='bash')
    monkeypatch.setattr(procfs, 'PROC_ROOT', proc.root)
    before = ksm_sampler.noise(Launcher())
    assert before == [{'pid': 600, 'name': 'appliance'}]
    proc.remove(600)
    proc.add(601, comm='other', mergeable=True)
    assert ksm_sampler.noise(Launcher(), before) == before + [
        {'pid': 601, 'name': 'other'}]


def test_loadavg_is_a_number():
    assert ksm_sampler.loadavg() >= 0


def test_a_row_is_stamped_when_its_saving_was_read(tmp_path, monkeypatch):
    """The zero-page walk after the reads can take a second while guests
    fill their memory: the row's time is before it."""
    fake_ksm = ksm_fakes.FakeKsm(tmp_path / 'ksm')
    proc = ksm_fakes.FakeProc(tmp_path / 'proc')
    proc.add_ksmd(pid=37)
    proc.add(500, mergeable=True, merging=40, rss_pages=70)
    monkeypatch.setattr(procfs, 'PROC_ROOT', proc.root)
    clock = ksm_fakes.FakeClock(start=50.0)

    def slow_walk(pid, frames):
        clock.sleep(1.0)
        return 0
    monkeypatch.setattr(ksm_sampler.zeropages, 'zero_mapped', slow_walk)
    sampler = ksm_sampler.Sampler(fake_ksm.sysfs, 37, lambda: {'a': 500},
                                  t0=48.0, clock=clock)
    sampler.take()
    assert sampler.columns['t'] == [2.0]
