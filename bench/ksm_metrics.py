"""The KSM benchmark's numbers, from sampled counters (no side effects).

Samples are columns of equal length: ``t`` (seconds since the run
began), ``saved`` (``pages_sharing``: pages the guests would otherwise
own) and ``ksmd_cpu`` (ksmd CPU seconds since the run began).

Real guests save memory KSM does not count as merged: ksmd splits their
transparent huge pages to merge parts of them, and since Linux 6.12 a
split maps the zero-filled subpages to the shared zero page. Their saving
is ``freed``: merged pages plus the guests' pages on the zero page
(``guest_zero_pages``, which is 0 for guests no ksmd touched). Synthetic
guests write every page, so theirs is ``saved``.

Time to X% is measured per wave, from the wave's arrival until the next
wave arrives (or the first one leaves): the time until the saving reaches
the previous wave's achievable level plus X% of what this wave adds.
"Achievable" is the most ``static-max`` saved in the same phase of its
run, or the theoretical value when static-max was not run. A policy that
has not caught up with earlier waves must catch up first. A policy's
headline time is its worst wave; None means some wave never got there
within its phase.
"""

GIB = 1024 ** 3
FRACTIONS = (0.5, 0.95)
STATIC, ADAPTIVE = 'static-max', 'adaptive'
SLOW = ('default', 'advisor', 'ksmtuned')
MAX_TIME_RATIO = 2.0  # adaptive's t95 within 2x static-max's
MAX_CPU_SHARE = 0.10  # adaptive's ksmd CPU within 10% of static-max's
MIN_SPEEDUP = 5.0  # adaptive's t95 5x sooner than the slow policies
# "At the end": the last 20 s (at most the second half) of the last phase.
FINAL_WINDOW = 20.0


SAVED, FREED = 'saved', 'freed'


def add_freed(samples):
    """Add the ``freed`` column: merged pages plus zero-page pages."""
    zero = samples.get('guest_zero_pages') or [0] * len(samples['t'])
    samples[FREED] = [s + z for s, z in zip(samples[SAVED], zero,
                                            strict=True)]
    return samples


def time_to(times, values, threshold, start, end):
    """Seconds from ``start`` until ``values`` first reach ``threshold``
    within [start, end]; None when they do not."""
    for t, value in zip(times, values, strict=True):
        if start <= t <= end and value >= threshold:
            return t - start
    return None


def integral(times, values):
    """Trapezoidal integral of ``values`` over ``times``."""
    total = 0.0
    for i in range(1, len(times)):
        total += (times[i] - times[i - 1]) * (values[i] + values[i - 1]) / 2
    return total


def phases_from_log(log, duration):
    """[(wave, start, end)] from the runner's event log (real times)."""
    phases = []
    for i, entry in enumerate(log):
        if entry['kind'] == 'arrive':
            end = log[i + 1]['time'] if i + 1 < len(log) else duration
            phases.append((entry['wave'], entry['time'], end))
    return phases


def achievable_levels(phases, times, saved):
    """The most saved within each phase (of the static-max run)."""
    return [max((v for t, v in zip(times, saved, strict=True)
                 if start <= t <= end), default=0)
            for _, start, end in phases]


def threshold(previous, level, fraction):
    """The saving at which a wave that took it from ``previous`` to
    ``level`` has done ``fraction`` of that (what t50 and t95 count to)."""
    return previous + fraction * (level - previous)


def wave_times(phases, levels, times, saved, fractions=FRACTIONS):
    """Per wave: seconds to each fraction of what the wave adds."""
    waves, previous = [], 0
    for (wave, start, end), level in zip(phases, levels, strict=False):
        entry = {'wave': wave, 'start': round(start, 2),
                 'phase_seconds': round(end - start, 2),
                 'achievable_pages': level}
        for fraction in fractions:
            mark = threshold(previous, level, fraction)
            took = time_to(times, saved, mark, start, end)
            entry['t%d' % round(fraction * 100)] = (
                None if took is None else round(took, 2))
        # Never within the phase: at least until it got there later, or
        # until the end of the run when it never did.
        later = time_to(times, saved, mark, start, times[-1]
                        if times else end)
        entry['t95_at_least'] = round(
            later if later is not None else (times[-1] if times else end)
            - start, 2)
        previous = level
        waves.append(entry)
    return waves


def worst(waves, key):
    """The slowest wave's time, or None if some wave never got there."""
    values = [w[key] for w in waves]
    if not values or any(v is None for v in values):
        return None
    return max(values)


def value_at(times, values, when):
    """The last value sampled at or before ``when``."""
    found = values[0] if values else 0
    for t, value in zip(times, values, strict=True):
        if t > when:
            break
        found = value
    return found


def median(values):
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (
        values[middle - 1] + values[middle]) / 2.0


def final_level(times, values, end, window=FINAL_WINDOW):
    """The mean of ``values`` over the ``window`` seconds before ``end``:
    what a policy keeps saved once guests have settled."""
    picked = [v for t, v in zip(times, values, strict=True)
              if end - window <= t <= end]
    return sum(picked) / len(picked) if picked else 0.0


def summarize(samples, phases, levels, duration, page_size, key=SAVED):
    """The headline numbers of one policy's run; its saving is the
    ``key`` column (``saved`` or ``freed``)."""
    times, saved = samples['t'], samples[key]
    cpu = value_at(times, samples['ksmd_cpu'], duration) - (
        samples['ksmd_cpu'][0] if times else 0)
    saved_gib = [v * page_size / GIB for v in saved]
    merged_gib = [v * page_size / GIB for v in samples[SAVED]]
    resident_gib = [v * page_size / GIB for v in samples.get(
        'guest_rss_pages', [0] * len(times))]
    end = phases[-1][2] if phases else duration
    window = (min(FINAL_WINDOW, (phases[-1][2] - phases[-1][1]) / 2.0)
              if phases else FINAL_WINDOW)

    def at_end(values):
        return round(final_level(times, values, end, window), 3)
    gib_min = integral(times, saved_gib) / 60.0
    waves = wave_times(phases, levels, times, saved)
    return {
        't50': worst(waves, 't50'), 't95': worst(waves, 't95'),
        'waves': waves,
        'ksmd_cpu_seconds': round(cpu, 2),
        'saved_gib_min': round(gib_min, 4),
        'efficiency': round(gib_min / cpu, 4) if cpu > 0 else None,
        'peak_saved_gib': round(max(saved_gib, default=0.0), 3),
        'final_saved_gib': at_end(saved_gib),
        'final_merged_gib': at_end(merged_gib),
        # What the guests occupy at the end: resident minus merged (pages
        # on the zero page are not resident).
        'final_resident_gib': at_end(resident_gib),
        'final_footprint_gib': round(at_end(resident_gib)
                                     - at_end(merged_gib), 3),
        'shortest_phase': min((w['phase_seconds'] for w in waves),
                              default=0.0),
    }


def cpu_percent(times, cpu, window=2.0):
    """ksmd's CPU in percent of a core, over a sliding ``window``."""
    out, j = [], 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        span = t - times[j]
        out.append(100.0 * (cpu[i] - cpu[j]) / span if span > 0 else 0.0)
    return out


def _t95_bound(summary):
    """(t95, is_lower_bound): for 'never', the time the slowest wave
    took at least (until it got there after its phase, or the run's
    end)."""
    if summary['t95'] is not None:
        return summary['t95'], False
    bounds = [w['t95_at_least'] for w in summary.get('waves', [])
              if w['t95'] is None and 't95_at_least' in w]
    return max(bounds, default=summary['shortest_phase']), True


def check_targets(summaries, resolution=0.0):
    """The issue's targets, each {target, measured, met}; met is None
    when a policy it needs was not run or never reached 95%. Times are
    known to ``resolution`` seconds (the sampling interval): a time
    within one sample of its limit meets it."""
    adaptive, static = summaries.get(ADAPTIVE), summaries.get(STATIC)
    checks = []
    if adaptive and static:
        checks.append(_ratio_check(
            'adaptive t95 <= %gx static-max t95' % MAX_TIME_RATIO,
            adaptive['t95'], static['t95'], MAX_TIME_RATIO, higher=False,
            resolution=resolution))
        share = (adaptive['ksmd_cpu_seconds'] / static['ksmd_cpu_seconds']
                 if static['ksmd_cpu_seconds'] else None)
        checks.append({
            'target': 'adaptive ksmd CPU <= %d%% of static-max'
                      % round(MAX_CPU_SHARE * 100),
            'measured': None if share is None else '%.1f%% (%.1f s vs '
                        '%.1f s)' % (100 * share,
                                     adaptive['ksmd_cpu_seconds'],
                                     static['ksmd_cpu_seconds']),
            'met': None if share is None else share <= MAX_CPU_SHARE})
    for name in SLOW:
        if adaptive and name in summaries:
            slow, bound = _t95_bound(summaries[name])
            check = _ratio_check(
                'adaptive t95 %gx sooner than %s' % (MIN_SPEEDUP, name),
                slow, adaptive['t95'], MIN_SPEEDUP, higher=True)
            if bound and check['met'] is not None:
                check['measured'] = (
                    '>= %s (%s had not reached 95%% after %.0f s)'
                    % (check['measured'], name, slow))
            checks.append(check)
    return checks


def _ratio_check(target, numerator, denominator, limit, higher,
                 resolution=0.0):
    """``numerator / denominator`` against ``limit``; adaptive is the
    denominator when ``higher``, else the numerator."""
    adaptive, other = ((denominator, numerator) if higher
                       else (numerator, denominator))
    if adaptive is None:
        return {'target': target, 'met': False,
                'measured': 'adaptive never reached 95%'}
    if other is None or not denominator:
        return {'target': target, 'met': None,
                'measured': 'n/a (the other policy never reached 95%)'
                if other is None else 'n/a (zero time)'}
    ratio = numerator / denominator
    met = (ratio >= limit if higher
           else numerator <= limit * denominator + resolution)
    return {'target': target,
            'measured': '%.1fx (%.1f s vs %.1f s)' % (ratio, numerator,
                                                      denominator),
            'met': met}
