"""What merging a wave costs the kernel, by how often it scanned before.

``python -m bench.ksm_lapcost [--json FILE]``: a kernel measurement, no
tuner. ``smart_scan`` skips a page by its age, the full scans (laps)
since ksmd first visited it: never before three, then for 1, 2, 4 and
at last 8 laps between visits. A policy that scans without pause (the
grid's ``static-max``) ages the unique pages of the guests already
running within seconds; one that scans a few laps per guest start and
then rests (the tuner) keeps them young, and every later lap visits
them again. This measures what that does to the next wave, at the same
full speed for both (static-max's knobs, so the tuner's budget and
controller play no part):

* **aged**: the older guests start and ksmd runs :data:`AGED_LAPS` laps
  at full speed, as static-max does between waves;
* **young**: the same, but ksmd stops after :data:`YOUNG_LAPS` laps (the
  laps of a start's boost) until the new wave.

Then the new guests start; each variant reports ksmd's CPU for each lap
over the older memory and in all (what aging them cost), the mean of
the last three laps before the wave, and the wave's t95 and ksmd CPU
until it (the grid's merge-work floor, measured on each). Holds the KSM test
lock; the KSM settings found are restored at the end.
"""

import argparse
import dataclasses
import json
import sys
import time

from bench import ksm
from bench import ksm_launcher
from bench import ksm_policies
from bench import ksm_scenario
from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import sysfs as ksm_sysfs

AGED_LAPS = 40
YOUNG_LAPS = 6
POLL = 0.05
FULL_SPEED = {'run': 1, 'pages_to_scan': ksm_policies.STATIC_MAX_PAGES,
              'sleep_millisecs': 20, 'smart_scan': 1}


def workload(args):
    """Seed 3 case 2's memory at its fourth wave: 3 older waves of two
    688 MiB guests, 40% identical, then a wave of two more."""
    return ksm_scenario.Scenario(
        kind=ksm_scenario.WAVES, waves=args.old_waves + 1, guests=args.guests,
        guest_mib=args.mib, identical=args.identical,
        volatile=args.volatile)


class Counters(object):
    """ksmd's CPU, its laps and the guests' saving, read together."""

    def __init__(self, host, launcher):
        self.sysfs = host.sysfs
        self.launcher = launcher
        self.ksmd = procfs.find_ksmd()

    def read(self):
        merging = sum((procfs.ksm_stat(pid) or {}).get(
            'ksm_merging_pages', 0) for pid in self.launcher.pids().values())
        return {'t': time.monotonic(),
                'cpu': procfs.cpu_seconds(self.ksmd) or 0.0,
                'laps': self.sysfs.read_int('full_scans'),
                'saved': max(0, merging - self.sysfs.read_int(
                    'pages_shared'))}


def lap_costs(rows):
    """ksmd CPU seconds of each whole lap in ``rows`` (read every POLL)."""
    costs, mark = [], None
    for row in rows:
        if mark is not None and row['laps'] > mark['laps']:
            costs.append(round((row['cpu'] - mark['cpu'])
                               / (row['laps'] - mark['laps']), 3))
        if mark is None or row['laps'] > mark['laps']:
            mark = row
    return costs[1:]  # the first began before the rows did


# smart_scan's schedule for pages that never merge: visited at ages 0,
# 1, 2 and 3, then after 1, 2 and 4 skipped laps, then one lap in 9.
AGE_WINDOWS = ((1, 3), (4, 5), (6, 8), (9, 13), (14, 22), (23, 31),
               (32, 40))


def age_windows(costs):
    """{'laps A-B': mean CPU per lap} over each window of the schedule
    (lap 1 is the first whole lap; a window is one skip cycle)."""
    means = {}
    for first, last in AGE_WINDOWS:
        window = costs[first - 1:last]
        if len(window) == last - first + 1:
            means['laps %d-%d' % (first, last)] = round(
                sum(window) / len(window), 2)
    return means


def until(counters, done, timeout):
    """Rows read every POLL until ``done(rows)`` or ``timeout`` s."""
    rows, deadline = [], time.monotonic() + timeout
    while True:
        rows.append(counters.read())
        if done(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(POLL)


def wave_t95(rows, start, target):
    """(seconds, ksmd CPU) from ``start`` until the saving reached
    ``target``, or (None, None)."""
    for row in rows:
        if row['saved'] >= target:
            return (round(row['t'] - start['t'], 2),
                    round(row['cpu'] - start['cpu'], 2))
    return None, None


def run_variant(name, laps, scenario, progress):
    with ksm.session(ksm_sysfs.KsmSysfs(), ksm.LOCK_PATH, progress) as (
            host, workdir):
        ksm.reset(host)
        launcher = ksm_launcher.GuestLauncher(scenario, workdir)
        try:
            return measure(name, laps, scenario, host, launcher, progress)
        finally:
            launcher.stop_all()
            ksm.reset(host)


def start_wave(scenario, launcher, wave):
    guests = ksm_scenario.wave_guests(scenario, wave)
    for guest in guests:
        launcher.spawn(guest)
    for guest in guests:
        launcher.wait_ready(guest.name)


def measure(name, laps, scenario, host, launcher, progress):
    counters = Counters(host, launcher)
    for wave in range(1, scenario.waves):
        start_wave(scenario, launcher, wave)
    host.apply(FULL_SPEED)
    first = counters.read()['laps']
    rows = until(counters, lambda r: r[-1]['laps'] >= first + laps, 120.0)
    progress('%s: %d laps over the older guests' % (name, laps))
    if name == 'young':
        host.sysfs.write('run', 0)  # rest; the pages keep their age
        time.sleep(2.0)
        host.apply(FULL_SPEED)
    before = counters.read()
    level = before['saved']
    target = level + 0.95 * scenario.guests * scenario.identical_pages
    start_wave(scenario, launcher, scenario.waves)
    start = counters.read()
    start['t'], start['cpu'] = before['t'], before['cpu']
    wave_rows = until(counters, lambda r: r[-1]['saved'] >= target, 60.0)
    seconds, cpu = wave_t95(wave_rows, start, target)
    laps_cpu = lap_costs(rows)
    older = laps_cpu[-3:]
    return {'variant': name, 'laps_before': laps,
            'lap_cpu': laps_cpu,
            'laps_cpu_total': round(rows[-1]['cpu'] - rows[0]['cpu'], 2),
            'lap_cpu_by_age': age_windows(laps_cpu),
            'older_lap_cpu_mean': round(sum(older) / len(older), 3)
            if older else None,
            'wave_t95': seconds, 'wave_cpu': cpu,
            'skipped_before': host.sysfs.read_int('pages_skipped')}


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m bench.ksm_lapcost',
        description='What merging a wave of guests costs ksmd when the '
                    'older guests\' pages were scanned many times before '
                    '(aged by smart_scan, as under static-max) or a few '
                    'times (as under the tuner): a kernel measurement, at '
                    'full speed for both. Needs root and the KSM test '
                    'lock; restores the KSM settings.')
    parser.add_argument('--old-waves', type=int, default=3)
    parser.add_argument('--guests', type=int, default=2,
                        help='guests per wave (default 2)')
    parser.add_argument('--mib', type=int, default=688)
    parser.add_argument('--identical', type=float, default=0.4)
    parser.add_argument('--volatile', type=float, default=0.012)
    parser.add_argument('--json', help='write the results here')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    scenario = workload(args)
    results = {'workload': dataclasses.asdict(scenario), 'variants': []}
    for name, laps in (('aged', AGED_LAPS), ('young', YOUNG_LAPS)):
        results['variants'].append(run_variant(name, laps, scenario, print))
        print(json.dumps(results['variants'][-1]))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
