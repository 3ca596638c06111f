"""The KSM benchmark's randomized grid (``--scenario grid --seed N``).

The fixed scenarios are what the tuner was tuned on; the grid draws
waves workloads it was not: guest size, identical share, guests per
wave, waves and volatile share at random (:class:`Bounds`, seeded, so a
seed names the same cases everywhere), within the guest memory the host
holds safely. Each case runs ``static-max`` and the tuner on the same
guests (:func:`bench.ksm.run`: the KSM lock, a reset before each policy,
the settings restored) and is held to targets that must hold in every
case (:mod:`ksm_grid_targets`).

A case with a single guest in all is never drawn: its pages are unique
(the identical pages of :mod:`ksm_guest` are identical *across* guests),
so it has nothing to merge and no time to measure; the share-nothing
scenario covers memory that does not merge.
"""

import dataclasses
import math
import random
import re
import time

from bench import ksm
from bench import ksm_grid_targets
from bench import ksm_metrics
from bench import ksm_oracle
from bench import ksm_preflight
from bench import ksm_scenario

GRID = 'grid'
POLICIES = (ksm_metrics.STATIC, ksm_metrics.ADAPTIVE)
DEFAULT_CASES = 5
DEFAULT_SEED = 1


@dataclasses.dataclass(frozen=True)
class Bounds(object):
    """What the grid draws from (the issue's ranges), and the guest
    memory the host must hold at once (``memory_mib``)."""

    guest_mib: tuple = (128, 2048)
    identical: tuple = (0.2, 0.95)
    guests: tuple = (1, 8)
    waves: tuple = (1, 4)
    volatile: tuple = (0.0, 0.05)
    memory_mib: int = 6144
    # Each wave's phase: a floor, plus seconds per GiB of the wave's new
    # memory and of the memory already there (static-max needs about 1 s
    # of ksmd per GiB of new memory; the tuner up to 1.5x that, and
    # guests fill their memory meanwhile).
    min_phase: float = 12.0
    phase_per_new_gib: float = 4.0
    phase_per_old_gib: float = 0.5
    arrivals_share: float = 0.85
    step_mib: int = 16


# CI's smoke grid: two small cases that still have waves to merge.
SMOKE = Bounds(guest_mib=(64, 192), guests=(1, 3), waves=(1, 2),
               memory_mib=640, min_phase=8.0)


def draw_case(rng, bounds):
    """One case as a :class:`ksm_scenario.Scenario` of kind waves."""
    low, high = bounds.guest_mib
    # Log-uniform: small guests are as likely as big ones per doubling.
    mib = math.exp(rng.uniform(math.log(low), math.log(high)))
    mib = int(min(high, max(low, round(mib / bounds.step_mib)
                            * bounds.step_mib)))
    waves = rng.randint(*bounds.waves)
    identical = round(rng.uniform(*bounds.identical), 3)
    volatile = round(rng.uniform(*bounds.volatile), 4)
    # As many guests as memory allows, and two at least in all.
    most = min(bounds.guests[1], bounds.memory_mib // (waves * mib))
    least = max(bounds.guests[0], 2 if waves == 1 else 1)
    if most < least:
        return None
    guests = rng.randint(least, most)
    return ksm_scenario.Scenario(
        kind=ksm_scenario.WAVES, waves=waves, guests=guests, guest_mib=mib,
        identical=identical, volatile=volatile,
        duration=duration(waves, guests * mib, bounds),
        arrivals_share=bounds.arrivals_share)


def duration(waves, wave_mib, bounds):
    """Seconds per policy: every wave's phase, then the leaving."""
    phases = sum(bounds.min_phase
                 + bounds.phase_per_new_gib * wave_mib / 1024.0
                 + bounds.phase_per_old_gib * i * wave_mib / 1024.0
                 for i in range(waves))
    return round(phases / bounds.arrivals_share, 1)


def draw(seed, count, bounds=Bounds()):
    """``count`` cases drawn from ``seed``: the same cases everywhere."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        case = draw_case(rng, bounds)
        if case is not None:
            cases.append(case)
    return cases


def describe(scenario):
    return '%d wave%s x %d x %d MiB, %.0f%% identical, %.1f%% volatile' % (
        scenario.waves, '' if scenario.waves == 1 else 's', scenario.guests,
        scenario.guest_mib, 100 * scenario.identical,
        100 * scenario.volatile)


def run(seed, count, settings, bounds=Bounds(), lock_path=ksm.LOCK_PATH,
        progress=print, on_case=None, only=None, oracle=False):
    """Run every case of the grid (or the case numbers in ``only``, to
    run a disturbed case again); the results dict. ``on_case(result)``
    is called after each case (to save what was measured so far). With
    ``oracle``, each case also runs :mod:`ksm_oracle` after the two."""
    scenarios = draw(seed, count, bounds)
    result = {'seed': seed, 'count': count, 'oracle': oracle,
              'bounds': dataclasses.asdict(bounds), 'cases': []}
    for i, scenario in enumerate(scenarios):
        if only and i + 1 not in only:
            continue
        progress('grid seed %d, case %d/%d: %s, %.0f s per policy'
                 % (seed, i + 1, count, describe(scenario),
                    scenario.duration))
        raw = run_case(scenario, settings, lock_path, progress,
                       oracle=oracle)
        result['cases'].append(case_result(i + 1, scenario, raw, settings))
        result['host'] = raw['host']
        if on_case:
            on_case(finish(result))
    return finish(result)


def run_case(scenario, settings, lock_path, progress, tries=3,
             oracle=False):
    """Both policies on ``scenario`` (and the oracle, given static-max's
    marks); a case refused because a KSM test's tuner started meanwhile
    is run again once it has stopped."""
    for attempt in range(tries):
        wait_for_controllers(progress)
        try:
            began = time.monotonic()
            runs = ksm.run_policies(scenario, list(POLICIES), settings,
                                    lock_path=lock_path, progress=progress)
            if oracle:
                marks = ksm_oracle.marks_from_static(
                    scenario, runs[ksm_metrics.STATIC])
                progress('  the oracle\'s marks: %s pages saved'
                         % '/'.join(str(m) for m in marks))
                runs.update(ksm.run_policies(
                    scenario, [ksm_oracle.NAME], settings,
                    lock_path=lock_path, progress=progress,
                    options={ksm_oracle.NAME: {'marks': marks}}))
            return dict(ksm.results(scenario, runs, settings),
                        wall_seconds=round(time.monotonic() - began, 1))
        except ksm_preflight.BenchRefused:
            if attempt + 1 == tries or \
                    not ksm_preflight.competing_controllers():
                raise
            progress('  case refused beside another KSM controller; '
                     'running it again')


def wait_for_controllers(progress, timeout=1800.0, sleep=time.sleep,
                         clock=time.monotonic):
    """A grid runs for minutes: wait, between cases, for a KSM test's
    tuner to end rather than fail the grid (the benchmark refuses to
    start beside one)."""
    deadline = clock() + timeout
    said = None
    while True:
        competing = ksm_preflight.competing_controllers()
        if not competing or clock() > deadline:
            return
        if competing != said:
            progress('  waiting for %s to stop' % ', '.join(competing))
            said = competing
        sleep(5.0)


def case_result(number, scenario, raw, settings):
    """What a case keeps: its scenario, each policy's summary, the
    tuner's decisions, the noise seen, and its checks."""
    policies = {name: {'summary': p['summary'], 'noise': p['noise'],
                       'loadavg': p['loadavg'],
                       'samples': {k: p['samples'][k] for k in KEPT
                                   if k in p['samples']}}
                for name, p in raw['policies'].items()}
    adaptive = raw['policies'].get(ksm_metrics.ADAPTIVE, {})
    policies.get(ksm_metrics.ADAPTIVE, {})['decisions'] = (
        adaptive.get('report', {}).get('decisions', []))
    if ksm_oracle.NAME in policies:
        # Its marks, and when it ran and stopped ksmd.
        policies[ksm_oracle.NAME]['report'] = (
            raw['policies'][ksm_oracle.NAME].get('report', {}))
    numbers = ksm_grid_targets.case_numbers(scenario, raw['policies'],
                                            settings)
    return {'case': number, 'scenario': dataclasses.asdict(scenario),
            'describe': describe(scenario), 'policies': policies,
            'numbers': numbers,
            'disturbed': disturbances(scenario, raw['policies']),
            'checks': ksm_grid_targets.case_checks(number, numbers),
            'wall_seconds': raw['wall_seconds']}


# The sampled columns a case keeps (enough to compute its numbers again).
KEPT = ('t', 'ksmd_cpu', 'saved', 'state', 'full_scans', 'pages_to_scan',
        'guest_rss_pages')
MERGEABLE = re.compile(r'(\d+) mergeable guests\)$')


def disturbances(scenario, policies):
    """What else ran: mergeable processes seen before or after a policy
    (the sampler's noise), and the tuner counting more mergeable
    processes than the case has guests (one came and went meanwhile)."""
    found = ['%s: other mergeable process %s (pid %d)' % (
        name, entry['name'], entry['pid'])
        for name, run_ in policies.items() for entry in run_['noise']]
    counts = [int(m.group(1)) for m in (
        MERGEABLE.search(d) for d in policies.get(
            ksm_metrics.ADAPTIVE, {}).get('report', {}).get('decisions', []))
        if m]
    if max(counts, default=0) > scenario.peak_guests:
        found.append('adaptive: the tuner saw %d mergeable processes, the '
                     'case has %d guests' % (max(counts),
                                             scenario.peak_guests))
    return found


def finish(result):
    """Cases worst first, and every check for the run's summary."""
    cases = sorted(result['cases'], key=lambda c: c['case'])
    result['cases'] = cases
    result['worst_first'] = [c['case'] for c in sorted(
        cases, key=lambda c: -c['numbers']['badness'])]
    result['targets'] = [check for c in cases for check in c['checks']]
    return result
