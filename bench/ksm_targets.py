"""Each scenario's targets, decided by the numbers of one run.

Every check is ``{scenario, target, measured, met}``; ``met`` is True,
False (the report says MISSED) or None when a policy it needs was not
run. Times are measured at the sampler's resolution (half a second), so
a time target allows one sample more than its ratio. The targets:

======================  ==================================================
waves, real-guests      adaptive t95 <= 2x static-max's, ksmd CPU <= 10%
                        of static-max's; real guests also >= 95% of its
                        saving at the end; their saving (and t95) counts
                        merged pages and pages on the zero page
churn                   adaptive's ksmd CPU over any 2 s window <= budget
                        + 5 points; every guest 95% merged before the next
                        arrives
share-nothing           no ksmd CPU after the tuner found the loss
pressure                adaptive saves >= 95% of static-max (at the end),
                        its settled ksmd CPU within the pressure budget
                        + 5 points over any 2 s window in which the tuner
                        was settled (``settled`` or ``pressure``: no new
                        memory; boost and follow are held to the full
                        budget, as churn checks)
scale                   settled ksmd CPU <= the settled ceiling (1% of a
                        core) at every size
======================  ==================================================
"""

from bench import ksm_metrics
from bench import ksm_scenario

ADAPTIVE, STATIC = ksm_metrics.ADAPTIVE, ksm_metrics.STATIC
RESOLUTION = 0.5  # seconds between samples
BUDGET_SLACK = 5.0  # points of a core over a 2 s window
MIN_SAVING_SHARE = 0.95
LOSS_CPU_SLACK = 0.01  # one clock tick in flight when ksmd stops


def check(scenario, target, measured, met):
    return {'scenario': scenario, 'target': target, 'measured': measured,
            'met': met}


def _mark(scenario, checks):
    for entry in checks:
        entry['scenario'] = scenario
    return checks


def for_scenario(scenario, policies, settings):
    """The checks of one scenario's run; ``policies`` as in results()."""
    summaries = {n: p['summary'] for n, p in policies.items()}
    kind = scenario.kind
    if kind == ksm_scenario.WAVES:
        return _mark(kind, ksm_metrics.check_targets(summaries, RESOLUTION))
    if kind == ksm_scenario.REAL_GUESTS:
        checks = ksm_metrics.check_targets(
            {n: s for n, s in summaries.items() if n in (ADAPTIVE, STATIC)},
            RESOLUTION)
        return _mark(kind, checks + [_freed_saving_check(policies)])
    if ADAPTIVE not in policies:
        return [check(kind, 'adaptive targets', 'adaptive was not run',
                      None)]
    adaptive = policies[ADAPTIVE]
    if kind == ksm_scenario.CHURN:
        return churn_checks(scenario, adaptive, settings)
    if kind == ksm_scenario.SHARE_NOTHING:
        return [loss_check(adaptive)]
    return pressure_checks(policies, settings)


def _saving_check(policies):
    target = 'adaptive saves >= %d%% of static-max' % round(
        MIN_SAVING_SHARE * 100)
    if ADAPTIVE not in policies or STATIC not in policies:
        return check(None, target, 'n/a (needs both)', None)
    ours = policies[ADAPTIVE]['summary']['final_saved_gib']
    theirs = policies[STATIC]['summary']['final_saved_gib']
    if not theirs:
        return check(None, target, 'n/a (static-max saved nothing)', None)
    return check(None, target, '%.0f%% (%.3f vs %.3f GiB at the end)' % (
        100 * ours / theirs, ours, theirs),
        ours >= MIN_SAVING_SHARE * theirs)


def _freed_saving_check(policies):
    """Real guests: the saving counts the guests' pages that went to the
    shared zero page as well as merged pages (``ksm_metrics.FREED``).

    Merged pages alone undercount: to merge part of a transparent huge
    page (QEMU asks for them for guest RAM), ksmd splits it, and since
    Linux 6.12 a split maps the zero-filled subpages to the shared zero
    page. The later ksmd splits a page (the slower it scans while guests
    boot), the more of it is zeros by then: those pages leave the guest's
    memory without counting as merged.
    """
    found = _saving_check(policies)
    if found['met'] is None:
        return found
    merged = [policies[n]['summary'].get('final_merged_gib')
              for n in (ADAPTIVE, STATIC)]
    found['target'] += ' (merged + zero-page pages)'
    if None not in merged and merged[1]:
        found['measured'] += (
            '; merged pages alone %.0f%% (%.3f vs %.3f GiB)'
            % (100 * merged[0] / merged[1], merged[0], merged[1]))
    return found


def worst_window(samples, only=None, window=2.0):
    """ksmd's highest CPU percent over any ``window`` seconds (of the
    samples where ``only(i)`` holds, when given)."""
    rolling = ksm_metrics.cpu_percent(samples['t'], samples['ksmd_cpu'],
                                      window)
    values = [v for i, v in enumerate(rolling)
              if samples['t'][i] >= window and (only is None or only(i))]
    return max(values, default=0.0)


def churn_checks(scenario, adaptive, settings):
    budget = settings.cpu_budget_percent
    worst = worst_window(adaptive['samples'])
    checks = [check(ksm_scenario.CHURN,
                    'ksmd CPU <= budget %d%% + %g points in any 2 s window'
                    % (budget, BUDGET_SLACK),
                    'worst 2 s window %.1f%%' % worst,
                    worst <= budget + BUDGET_SLACK)]
    times = guest_t95(scenario, adaptive)
    late = [name for name, took in times.items()
            if took is None or took > scenario.arrive_every + RESOLUTION]
    known = [t for t in times.values() if t is not None]
    checks.append(check(
        ksm_scenario.CHURN,
        'every new guest 95%% merged within %g s (before the next one)'
        % scenario.arrive_every,
        '%d of %d guests; median %s s, worst %s' % (
            len(times) - len(late), len(times),
            _fmt(ksm_metrics.median(known)),
            'never' if None in times.values() else _fmt(max(known,
                                                            default=None))),
        bool(times) and not late))
    return checks


def _fmt(value):
    return 'n/a' if value is None else '%.1f' % value


def guest_t95(scenario, run, fraction=0.95):
    """{guest: seconds from its arrival (the second guest's, for the
    first) until KSM merged ``fraction`` of its identical pages}."""
    samples, events = run['samples'], run['events']
    arrivals = [e for e in events if e['kind'] == 'arrive']
    leaves = {e['wave']: e['time'] for e in events if e['kind'] == 'leave'}
    level = fraction * scenario.identical_pages
    times = {}
    for i, event in enumerate(arrivals):
        if len(arrivals) < 2:
            break
        start = arrivals[1]['time'] if i == 0 else event['time']
        end = leaves.get(event['wave'], samples['t'][-1])
        for name in ('bench-w%d-g%d' % (event['wave'], g + 1)
                     for g in range(scenario.guests)):
            times[name] = None
            for t, merging in zip(samples['t'], samples['merging_by_guest'],
                                  strict=True):
                if start <= t <= end and merging.get(name, 0) >= level:
                    times[name] = round(t - start, 2)
                    break
    return times


def loss_check(adaptive):
    """No ksmd CPU after the tuner stopped it for a loss."""
    found = loss_detection(adaptive)
    target = 'no ksmd CPU after the loss is detected'
    if found is None:
        return check(ksm_scenario.SHARE_NOTHING, target,
                     'the tuner never stopped ksmd', False)
    detected, after = found
    return check(ksm_scenario.SHARE_NOTHING, target,
                 '%.2f ksmd CPU s after detection at %.1f s' % (after,
                                                                detected),
                 after <= LOSS_CPU_SLACK)


def loss_detection(run):
    """(seconds, ksmd CPU s after): when ksmd was stopped (``run`` 0)
    after the last guest arrived (each new guest is worth a look), and
    what it used from then until guests left; None when it never was."""
    samples, events = run['samples'], run['events']
    arrived = max((e['done'] for e in events if e['kind'] == 'arrive'),
                  default=None)
    leave = min((e['time'] for e in events if e['kind'] == 'leave'),
                default=samples['t'][-1] if samples['t'] else 0)
    if arrived is None:
        return None
    for i, t in enumerate(samples['t']):
        if arrived < t < leave and samples['run'][i] == 0:
            at_leave = ksm_metrics.value_at(samples['t'],
                                            samples['ksmd_cpu'], leave)
            return round(t, 2), round(at_leave - samples['ksmd_cpu'][i], 3)
    return None


def pressure_checks(policies, settings):
    adaptive = policies[ADAPTIVE]
    checks = [_gib_min_check(policies)]
    budget = settings.pressure_cpu_budget_percent
    samples = adaptive['samples']
    calm = [i for i in range(len(samples['t'])) if _settled(samples, i)]
    worst = worst_window(samples, only=lambda i: _calm_window(
        samples, i, set(calm))) if calm else None
    checks.append(check(
        ksm_scenario.PRESSURE,
        'settled ksmd CPU <= pressure budget %g%% + %g points in any 2 s '
        'window' % (budget, BUDGET_SLACK),
        'never settled' if worst is None else 'worst 2 s window %.1f%%'
        % worst, worst is not None and worst <= budget + BUDGET_SLACK))
    return checks


SETTLED_STATES = ('settled', 'pressure')


def _settled(samples, i):
    """Whether the tuner was settled at sample ``i`` (by its published
    state; runs recorded without it: by its settled knobs)."""
    states = samples.get('state')
    if states and any(states):
        return states[i] in SETTLED_STATES
    return samples['run'][i] == 1 and samples['sleep_millisecs'][i] == 200


def _calm_window(samples, i, calm, window=2.0):
    """Whether every sample of the window ending at ``i`` was calm."""
    j = i
    while j >= 0 and samples['t'][j] >= samples['t'][i] - window:
        if j not in calm:
            return False
        j -= 1
    return True


def _gib_min_check(policies):
    check_ = _saving_check(policies)
    check_['scenario'] = ksm_scenario.PRESSURE
    return check_
