"""Laps and merges per process from the kernel's ksm trace events
(bench/ksm_trace_laps.py)."""

from bench import ksm_trace_laps as laps

HEADER = ['# tracer: nop', '#', '#           TASK-PID     CPU#  |||||  '
          'TIMESTAMP  FUNCTION']


def event(when, text, task='ksmd-40'):
    return '%16s [000] ..... %.6f: %s' % (task, when, text)


def merge(when, mm, error=0, ksm=''):
    return event(when, 'ksm_merge_with_ksm_page: %spfn 1 rmap_item 0000000'
                       '000000001 mm %s error %d' % (ksm, mm, error))


TRACE = HEADER + [
    event(10.0, 'ksm_start_scan: seq 7 rmap size 100'),
    event(10.1, 'ksm_enter: mm 00000000000000aa', task='qemu-system-x86-9'),
    merge(10.2, '00000000000000bb'),  # another process's merge
    event(10.3, 'ksm_stop_scan: seq 7 rmap size 100'),
    event(10.4, 'ksm_start_scan: seq 8 rmap size 100'),
    event(10.9, 'ksm_stop_scan: seq 8 rmap size 200'),
    event(11.0, 'ksm_start_scan: seq 9 rmap size 200'),
    merge(11.1, '00000000000000aa'),
    merge(11.2, '00000000000000aa', ksm='ksm '),
    merge(11.3, '00000000000000aa', error=-14),  # failed: not counted
    event(11.5, 'ksm_stop_scan: seq 9 rmap size 200'),
    event(11.6, 'ksm_start_scan: seq 10 rmap size 200'),
    event(11.9, 'ksm_stop_scan: seq 10 rmap size 200'),
    event(12.0, 'ksm_start_scan: seq 11 rmap size 200'),
    event(12.1, 'ksm_exit: mm 00000000000000aa', task='qemu-system-x86-9'),
    merge(12.2, '00000000000000aa'),  # a later process with the same mm
]


def test_a_process_merges_in_the_second_lap_after_it_joined():
    [join] = laps.joins(laps.parse(TRACE))
    assert join['mm'] == '00000000000000aa'
    assert join['time'] == 10.1
    # The lap in progress, the first after (its first visit), the second
    # (its merges) and one more; the merge after its exit is not its.
    assert [(lap['seq'], lap['merged']) for lap in join['laps']] == [
        (7, 0), (8, 0), (9, 2), (10, 0)]
    text = laps.format_text([join])
    assert 'full scan 7 (in progress): before to +0.200 s' in text
    assert 'full scan 9 (lap 2 after): +0.900 s to +1.400 s, 2 pages ' \
        'merged' in text


def test_quiet_laps_after_the_first_ones_are_one_line():
    lines = HEADER + [event(1.0, 'ksm_enter: mm 00000000000000aa')]
    for seq in range(10):
        lines += [event(2.0 + seq, 'ksm_start_scan: seq %d rmap size 1'
                        % seq),
                  event(2.5 + seq, 'ksm_stop_scan: seq %d rmap size 1'
                        % seq)]
    lines.insert(-1, merge(11.2, '00000000000000aa'))
    text = laps.format_text(laps.joins(laps.parse(lines)), shown=2)
    assert '... 7 full scans, +3.000 to +9.500 s: nothing merged' in text
    assert 'full scan 9 (lap 10 after): +10.000 s to +10.500 s, 1 pages ' \
        'merged' in text


def test_no_join_says_so():
    assert laps.format_text(laps.joins(laps.parse(HEADER))) == (
        'No ksm_enter event in the trace.')


def test_a_trace_that_cannot_be_read_is_one_line(tmp_path, capsys):
    assert laps.main([str(tmp_path / 'missing')]) == 2
    err = capsys.readouterr().err
    assert err == 'ksm_trace_laps: error: cannot read %s: No such file ' \
                  'or directory\n' % (tmp_path / 'missing')
