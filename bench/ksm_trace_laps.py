"""When a guest's pages merge, lap by lap, from the kernel's own trace.

``python -m bench.ksm_trace_laps TRACE``: reads the text of the kernel's
``ksm`` trace events (``/sys/kernel/tracing/trace`` with
``events/ksm/{ksm_enter,ksm_start_scan,ksm_stop_scan,
ksm_merge_with_ksm_page,ksm_merge_one_page}`` enabled while a benchmark
runs) and prints, for every process that asked for merging
(``ksm_enter``), ksmd's laps (full scans) from then on and the pages of
that process merged in each, up to the lap after its last merge.

It shows two things of the kernel's that no policy changes: a process
that joins is put just behind ksmd's cursor, so its first visit waits for
the rest of the lap in progress and comes in the next one; and a page
merges at its second visit at the earliest, even when its twin is
already merged (since Linux 6.x ``cmp_and_merge_page`` checks that the
page's checksum held since the last visit before it searches the stable
tree). So a guest that starts merges in the second lap after it joined:
two laps over all the memory already there, whatever they cost.
"""

import argparse
import re
import sys

EVENT = re.compile(r'\s(\d+\.\d+): (ksm_\w+): (.*)$')
MM = re.compile(r'\bmm (\w+)')
ERROR = re.compile(r'\berror (-?\d+)')
SEQ = re.compile(r'\bseq (\d+)')


def parse(lines):
    """[(time, event, fields text)] of the ksm events in ``lines``."""
    events = []
    for line in lines:
        match = EVENT.search(line)
        if match:
            events.append((float(match.group(1)), match.group(2),
                           match.group(3)))
    return events


def joins(events):
    """Per ``ksm_enter``, in order: {'mm', 'time', 'laps': [{'seq',
    'start', 'stop', 'merged'}]}: the lap in progress when it joined and
    the laps after it, each with the pages of that mm merged (without
    error) in it, up to the lap after the last one that merged any."""
    result = []
    for index, (when, kind, fields) in enumerate(events):
        if kind != 'ksm_enter':
            continue
        mm = MM.search(fields).group(1)
        laps, lap = [], {'seq': None, 'start': None, 'stop': None,
                         'merged': 0}
        for later, what, rest in events[index + 1:]:
            if what == 'ksm_exit' and MM.search(rest).group(1) == mm:
                break
            if what == 'ksm_start_scan':
                if lap['seq'] is not None or lap['merged']:
                    laps.append(lap)
                lap = {'seq': int(SEQ.search(rest).group(1)),
                       'start': later, 'stop': None, 'merged': 0}
            elif what == 'ksm_stop_scan':
                lap['stop'] = later
                if lap['seq'] is None:
                    lap['seq'] = int(SEQ.search(rest).group(1))
            elif what.startswith('ksm_merge') and \
                    MM.search(rest).group(1) == mm and \
                    int(ERROR.search(rest).group(1)) == 0:
                lap['merged'] += 1
        laps.append(lap)
        last = max((i for i, lap in enumerate(laps) if lap['merged']),
                   default=None)
        result.append({'mm': mm, 'time': when,
                       'laps': laps[:None if last is None else last + 2]})
    return result


def _lap_line(join, lap, after):
    if lap['start'] is None:
        label, start = 'in progress', 'before'
    else:
        label, start = 'lap %d after' % after, '+%.3f s' % (
            lap['start'] - join['time'])
    stop = '-' if lap['stop'] is None else '+%.3f s' % (
        lap['stop'] - join['time'])
    return '  full scan %s (%s): %s to %s, %d pages merged' % (
        '?' if lap['seq'] is None else lap['seq'], label, start, stop,
        lap['merged'])


def format_text(found, shown=3):
    """Each join and its laps; after the first ``shown`` laps, a run of
    laps that merged nothing of it is one line."""
    lines = []
    for number, join in enumerate(found, 1):
        lines.append('process %d (mm %s) joined at %.3f s' % (
            number, join['mm'], join['time']))
        after, quiet = 0, []
        for lap in join['laps']:
            after += lap['start'] is not None
            if after > shown and not lap['merged']:
                quiet.append(lap)
                continue
            if quiet:
                lines.append('  ... %d full scans, +%.3f to +%.3f s: '
                             'nothing merged' % (
                                 len(quiet), quiet[0]['start'] - join['time'],
                                 (quiet[-1]['stop'] or quiet[-1]['start'])
                                 - join['time']))
                quiet = []
            lines.append(_lap_line(join, lap, after))
        if quiet:
            lines.append(_lap_line(join, quiet[0], after - len(quiet) + 1))
    return '\n'.join(lines) if lines else 'No ksm_enter event in the trace.'


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ksm_trace_laps', description=__doc__.split('\n')[0])
    parser.add_argument('trace', help='the text of /sys/kernel/tracing/'
                                      'trace, or - for standard input')
    args = parser.parse_args(argv)
    if args.trace == '-':
        events = parse(sys.stdin)
    else:
        try:
            with open(args.trace) as f:
                events = parse(f)
        except OSError as err:
            print('ksm_trace_laps: error: cannot read %s: %s' % (
                args.trace, err.strerror or err), file=sys.stderr)
            return 2
    print(format_text(joins(events)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
