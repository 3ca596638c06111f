"""Big hosts: the adaptive tuner at 1, 2, 4, 8 and 16 GiB of mergeable
memory, and a model of it projected to 256 GiB and 1 TiB hosts.

At each size, synthetic guests (85% identical pages) fill their memory;
the real tuner (fed by the real hook, :mod:`ksm_adaptive`) merges them
and settles; then ksmd's CPU is measured over ``settled_seconds`` of the
tuner being settled (time it spends boosting for another process that
starts on a shared host does not count). Per
size: *t95* (seconds from the guests being filled to 95% of the possible
saving), *boost CPU* (ksmd CPU seconds from then until the tuner
settled) and *settled CPU* (percent of a core). A size that would leave
less than :data:`FLOOR_MIB` of available memory on this shared host is
skipped, with the reason.

The model: t95 and boost CPU grow linearly with memory (a boost is at
least three full scans of all of it, at the CPU budget): least squares
``a + b x GiB``; settled CPU is held by ``settled_cpu_percent`` whatever
the memory: its model is the mean. Values past the largest measured size
are a projection, and labelled so.
"""

import os
import time

from bench import ksm as bench
from bench import ksm_launcher
from bench import ksm_metrics
from bench import ksm_preflight
from bench import ksm_sampler
from bench import ksm_scenario
from bench import ksm_targets
from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import statedir as ksm_statedir

SIZES_GIB = (1, 2, 4, 8, 16)
PROJECT_GIB = (256, 1024)
FLOOR_MIB = 4096  # never leave less available on this shared host
MARGIN_MIB = 1024
IDENTICAL = 0.85
SETTLE_TIMEOUT = 600.0


def scenario_for(gib):
    """Guests of at most 2 GiB, at least two of them."""
    guests = max(2, min(8, gib))
    return ksm_scenario.Scenario(waves=1, guests=guests,
                                 guest_mib=gib * 1024 // guests,
                                 identical=IDENTICAL, volatile=0.0,
                                 duration=SETTLE_TIMEOUT)


def fits(gib, available_mib):
    """None when ``gib`` fits in memory, else why it does not."""
    needed = gib * 1024 + FLOOR_MIB + MARGIN_MIB
    if needed <= available_mib:
        return None
    return ('needs %d MiB available (%d GiB of guests, %d MiB left to the '
            'host), only %d MiB are' % (needed, gib, FLOOR_MIB + MARGIN_MIB,
                                        available_mib))


def measure(gib, host, settings, workdir, settled_seconds):
    """One size: fill, merge, settle, measure. A point dict."""
    scenario = scenario_for(gib)
    policy_dir = os.path.join(workdir, '%dg' % gib)
    os.makedirs(policy_dir)
    bench.reset(host)
    launcher = ksm_launcher.GuestLauncher(scenario, policy_dir)
    policy = bench.POLICIES['adaptive'](host, policy_dir, settings)
    sampler, noise = None, ksm_sampler.noise(launcher)
    try:
        policy.start()
        t0 = time.monotonic()
        sampler = ksm_sampler.Sampler(host.sysfs, procfs.find_ksmd(),
                                      launcher.pids, t0)
        sampler.start()
        ksm_scenario.ScenarioRunner(scenario, launcher, policy).arrive(1)
        filled = time.monotonic() - t0
        statedir = ksm_statedir.KsmStateDir(policy.state_dir)
        settled_at = _wait_settled(statedir, SETTLE_TIMEOUT)
        settled = (None if settled_at is None
                   else measure_settled(statedir, settled_seconds))
        noise = ksm_sampler.noise(launcher, noise)
        samples = sampler.finish()
    finally:
        if sampler is not None:
            sampler.finish()
        launcher.stop_all()
        policy.stop()
        bench.reset(host)
    entry = point(gib, scenario, samples, filled,
                  None if settled_at is None else settled_at - t0)
    if settled is not None:
        entry.update(settled)
    return dict(entry, noise=noise, decisions=policy.report()['decisions'],
                loadavg=ksm_sampler.loadavg())


def measure_settled(statedir, seconds, step=0.5, clock=time.monotonic,
                    sleep=time.sleep, cpu=None):
    """ksmd's CPU while the tuner is settled, over ``seconds`` of settled
    time (at most three times as long in all): another process starting
    on a shared host makes it boost, and that is not the settled cost."""
    cpu = cpu or (lambda: procfs.cpu_seconds(procfs.find_ksmd()) or 0.0)
    counted = used = 0.0
    deadline = clock() + 3 * seconds
    last = (clock(), cpu(), _settled(statedir))
    while counted < seconds and clock() < deadline:
        sleep(step)
        now = (clock(), cpu(), _settled(statedir))
        if last[2] and now[2]:
            counted += now[0] - last[0]
            used += now[1] - last[1]
        last = now
    return {'settled_seconds': round(counted, 1),
            'settled_cpu_percent': (round(100.0 * used / counted, 2)
                                    if counted else None)}


def _settled(statedir):
    return (statedir.tuner() or {}).get('state') == 'settled'


def _wait_settled(statedir, timeout):
    """The monotonic time the tuner published 'settled', or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _settled(statedir):
            return time.monotonic()
        time.sleep(0.25)
    return None


def point(gib, scenario, samples, filled, settled):
    """t95, boost CPU and settled CPU of one size, from its samples."""
    expected = scenario.expected_saving(scenario.guests)
    t95 = ksm_metrics.time_to(
        samples['t'], samples['saved'], 0.95 * expected, filled,
        samples['t'][-1])
    at = ksm_metrics.value_at
    cpu = samples['ksmd_cpu']
    entry = {'gib': gib, 'guests': scenario.guests,
             'guest_mib': scenario.guest_mib, 'fill_seconds': round(filled,
                                                                   1),
             'expected_pages': expected, 't95': t95,
             'peak_saved_pages': max(samples['saved'], default=0),
             'boost_cpu_seconds': None, 'settled_cpu_percent': None,
             'settled_seconds': None}
    if settled is not None:
        end = samples['t'][-1]
        entry.update(
            boost_cpu_seconds=round(at(samples['t'], cpu, settled)
                                    - at(samples['t'], cpu, filled), 2),
            settled_seconds=round(end - settled, 1),
            settled_cpu_percent=round(100.0 * (
                cpu[-1] - at(samples['t'], cpu, settled))
                / max(1e-9, end - settled), 2))
    return entry


def fit_line(xs, ys):
    """Least squares (a, b) of y = a + b x; None without two points."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    if len(pairs) < 2:
        return None
    n = len(pairs)
    mx = sum(x for x, _ in pairs) / n
    my = sum(y for _, y in pairs) / n
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    b = sum((x - mx) * (y - my) for x, y in pairs) / sxx if sxx else 0.0
    return my - b * mx, b


def model(points):
    """The fitted model and its values at :data:`PROJECT_GIB`."""
    xs = [p['gib'] for p in points]
    fitted = {}
    for key in ('t95', 'boost_cpu_seconds'):
        fitted[key] = fit_line(xs, [p[key] for p in points])
    settled = [p['settled_cpu_percent'] for p in points
               if p['settled_cpu_percent'] is not None]
    fitted['settled_cpu_percent'] = (
        (sum(settled) / len(settled), 0.0) if settled else None)
    projection = {gib: {key: (None if line is None
                              else round(line[0] + line[1] * gib, 2))
                        for key, line in fitted.items()}
                  for gib in PROJECT_GIB}
    return {'lines': fitted, 'projection': projection}


def targets(points, skipped, ceiling):
    """Settled ksmd CPU <= the ceiling at every measured size."""
    target = ('settled ksmd CPU <= %g%% of a core at every size'
              % ceiling)
    values = ['%d GiB %s' % (p['gib'], 'never settled'
                             if p['settled_cpu_percent'] is None
                             else '%.2f%%' % p['settled_cpu_percent'])
              for p in points]
    values += ['%d GiB skipped' % gib for gib in skipped]
    met = bool(points) and all(
        p['settled_cpu_percent'] is not None
        and p['settled_cpu_percent'] <= ceiling for p in points)
    return [ksm_targets.check('scale', target, ', '.join(values), met)]


def run(sizes, settings, host, workdir, settled_seconds=60.0,
        progress=print, available=None):
    """Every size in order (the caller holds the KSM lock)."""
    points, skipped = [], {}
    for gib in sizes:
        free = (available or _available_mib)()
        why_not = fits(gib, free)
        if why_not:
            skipped[gib] = why_not
            progress('[scale] %d GiB skipped: %s' % (gib, why_not))
            continue
        progress('[scale] %d GiB of mergeable memory' % gib)
        points.append(measure(gib, host, settings, workdir,
                              settled_seconds))
    return summary(points, skipped, settings)


def summary(points, skipped, settings):
    """The scaling run's result: points, model and targets."""
    return {'kind': 'scale', 'points': points, 'skipped': skipped,
            'model': model(points),
            'settled_cpu_ceiling': settings.settled_cpu_percent,
            'targets': targets(points, skipped,
                               settings.settled_cpu_percent)}


def _available_mib():
    return procfs.meminfo()['MemAvailable'] // 1024


def run_locked(sizes, settings, lock_path=bench.LOCK_PATH, sysfs=None,
               progress=print):
    """:func:`run`, each size under the KSM lock, the settings restored
    after each."""
    sysfs = sysfs or bench.ksm_sysfs.KsmSysfs()
    ksm_preflight.preflight(['adaptive'], sysfs, scenario_for(1))
    results = []
    for gib in sizes:
        with bench.session(sysfs, lock_path, progress) as (host, workdir):
            results.append(run([gib], settings, host, workdir,
                               progress=progress))
    return summary([p for r in results for p in r['points']],
                   {k: v for r in results for k, v in r['skipped'].items()},
                   settings)
