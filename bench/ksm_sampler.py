"""What the KSM benchmark watches while a policy runs.

Every half second: KSM's counters and scan knobs, ksmd's CPU time, how
many pages of the benchmark's own guests the kernel merged
(``/proc/<pid>/ksm_stat``) with their resident size, ``MemAvailable`` (in
percent of RAM), how many pages of the guests' mergeable memory map the
shared zero page (``guest_zero_pages``, see :mod:`zeropages`: memory that
a huge page split freed without KSM counting it) and the controller's
state when it publishes one (the tuner's ``boost``, ``follow``,
``settled``...); before and after:
other mergeable processes and the load average, which disturb the
numbers.

Memory saved (``saved``) is the running guests' merged pages minus the
KSM pages they share (``pages_shared``). ``pages_sharing`` says the same
while guests run, but after a guest exits it keeps counting the guest's
pages until ksmd next scans that guest's memory, which takes minutes at a
calm scan rate; it is kept as ``pages_sharing``.
"""

import threading
import time

from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import processes
from tests.lib import zeropages

SAMPLE_SECONDS = 0.5
COUNTERS = ('pages_sharing', 'pages_shared', 'pages_unshared',
            'pages_volatile', 'full_scans', 'pages_to_scan',
            'sleep_millisecs', 'run')


class Sampler(threading.Thread):
    """Samples KSM's counters and ksmd's CPU every ``interval`` seconds."""

    def __init__(self, sysfs, ksmd_pid, guest_pids, t0,
                 interval=SAMPLE_SECONDS, clock=time.monotonic,
                 state=lambda: None, zero_frames=None):
        super().__init__(daemon=True)
        self.sysfs = sysfs
        self.ksmd_pid = ksmd_pid
        self.guest_pids = guest_pids
        self.t0 = t0
        self.interval = interval
        self.clock = clock
        self.state = state
        self.zero_frames = (zeropages.ZeroFrames.probe()
                            if zero_frames is None else zero_frames)
        self.halt = threading.Event()
        self.cpu0 = procfs.cpu_seconds(ksmd_pid) or 0.0
        self.columns = {name: [] for name in (
            't', 'saved', 'ksmd_cpu', 'guest_merging', 'guest_rss_pages',
            'merging_by_guest', 'mem_available_percent', 'state',
            'guest_zero_pages')
            + COUNTERS}

    def run(self):
        tick = 0
        while not self.halt.is_set():
            self.take()
            tick += 1
            self.halt.wait(max(0.0, self.t0 + tick * self.interval
                               - self.clock()))
        self.take()

    def take(self):
        """One row. Its time is when the saving and ksmd's CPU were read:
        the zero-page count after them walks every guest's page map,
        which takes up to a second while guests fill their memory and
        the CPUs are busy, and a row stamped after it would be late by
        that much."""
        row = {name: self.sysfs.read_int(name) for name in COUNTERS}
        guests = self.guest_pids()
        row['merging_by_guest'] = {
            name: (procfs.ksm_stat(pid) or {}).get('ksm_merging_pages', 0)
            for name, pid in guests.items()}
        row['guest_merging'] = sum(row['merging_by_guest'].values())
        row['saved'] = max(0, row['guest_merging'] - row['pages_shared'])
        cpu = procfs.cpu_seconds(self.ksmd_pid) or self.cpu0
        row['ksmd_cpu'] = round(cpu - self.cpu0, 2)
        row['t'] = round(self.clock() - self.t0, 3)
        row['guest_rss_pages'] = sum(procfs.resident_pages(p)
                                     for p in guests.values())
        row['guest_zero_pages'] = sum(zeropages.zero_mapped(
            p, self.zero_frames) for p in guests.values())
        row['mem_available_percent'] = available_percent()
        row['state'] = self.state()
        for name, values in self.columns.items():
            values.append(row[name])

    def finish(self):
        self.halt.set()
        self.join(timeout=10)
        return self.columns


def available_percent():
    """``MemAvailable`` in percent of RAM, or None."""
    try:
        memory = procfs.meminfo()
    except procfs.ProcError:
        return None
    if not memory.get('MemTotal'):
        return None
    return round(100.0 * memory['MemAvailable'] / memory['MemTotal'], 1)


def noise(launcher, found=()):
    """Mergeable processes that are not our guests (they disturb), added
    to those ``found`` before."""
    ours = set(launcher.pids().values())
    known = {entry['pid'] for entry in found}
    return list(found) + [
        {'pid': pid, 'name': processes.process_name(pid)}
        for pid in sorted(set(processes.mergeable_processes()) - ours - known)]


def loadavg():
    """The 1-minute load average: other work on the host disturbs too."""
    with open('/proc/loadavg') as f:
        return float(f.read().split()[0])
