"""What KSM does on this host, for people (text), tools (JSON) and
Prometheus (node_exporter textfile format).

Memory saved is ``pages_sharing`` pages (each is a page some process would
otherwise own), the usual reading; the kernel's own ``general_profit``
(Linux 6.1+) also subtracts KSM's bookkeeping and is shown beside it.
"""

import mmap

from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import processes

PAGE_SIZE = mmap.PAGESIZE
MIB = 1024 * 1024

COUNTERS = ('pages_shared', 'pages_sharing', 'pages_unshared',
            'pages_volatile', 'full_scans', 'general_profit',
            'ksm_zero_pages', 'pages_scanned', 'pages_skipped')
KNOBS = ('run', 'pages_to_scan', 'sleep_millisecs', 'merge_across_nodes',
         'use_zero_pages', 'max_page_sharing', 'advisor_mode', 'smart_scan')


def guests(proc_root=None):
    """[{name, pid, merging_pages}] of every process with mergeable memory,
    named by the libvirt domain name of its qemu process."""
    found = []
    for pid, stats in sorted(processes.mergeable_processes(proc_root).items()):
        found.append({
            'name': processes.process_name(pid, proc_root),
            'pid': pid,
            'merging_pages': stats.get('ksm_merging_pages', 0),
            'profit_bytes': stats.get('ksm_process_profit'),
        })
    return found


def collect(sysfs, statedir, clock, sleeper, window=0.5,
            proc_root=None):
    """Everything ``ksm status`` shows, as one dict.

    :param window: seconds over which ksmd's CPU use is measured.
    """
    cpu = processes.KsmdCpu(clock, proc_root)
    cpu.sample()
    sleeper(window)
    cpu_percent = cpu.sample()
    values = sysfs.read_all()
    status = {name: values.get(name) for name in KNOBS + COUNTERS}
    sharing = values.get('pages_sharing', 0) + values.get('ksm_zero_pages',
                                                          0)
    found = guests(proc_root)
    attach_owners(found, statedir.guests())
    status.update(
        saved_bytes=sharing * PAGE_SIZE,
        saved_mib=round(sharing * PAGE_SIZE / MIB, 1),
        general_profit_mib=(None if values.get('general_profit') is None
                            else round(values['general_profit'] / MIB, 1)),
        ksmd_cpu_percent=(None if cpu_percent is None
                          else round(cpu_percent, 1)),
        ksmd_pid=cpu.pid,
        ksmd_nice=_nice(cpu.pid, proc_root),
        tuner=statedir.tuner() if statedir.tuner_alive() else None,
        hook_guests=statedir.guests(),
        guests=found,
        projects=project_savings(found, sharing),
    )
    return status


def _nice(pid, proc_root=None):
    """ksmd's nice value (the tuner raises its priority while it boosts:
    ``[ksm] boost_ksmd_nice``), or None."""
    try:
        return None if pid is None else procfs.stat(pid, proc_root).nice
    except procfs.ProcError:
        return None


def attach_owners(found, records):
    """Add ``instance``, ``project`` and ``project_name`` to each guest of
    ``found`` from the hook's ``records`` (nova's domain metadata), matched
    by qemu pid, else by domain name; None for processes nova did not
    start."""
    by_pid = {r.get('pid'): r for r in records if r.get('pid')}
    by_name = {r.get('name'): r for r in records}
    for guest in found:
        record = by_pid.get(guest['pid']) or by_name.get(guest['name'], {})
        for key in ('instance', 'project', 'project_name'):
            guest[key] = record.get(key)


def project_savings(found, sharing):
    """Memory saved per project, biggest first.

    KSM saves ``sharing`` pages on the whole host; each project is
    credited the share of it that its guests' merged pages
    (``ksm_merging_pages``) are of all guests' merged pages. Processes that
    nova did not start count as project None.
    """
    total = sum(g['merging_pages'] for g in found)
    projects = {}
    for guest in found:
        entry = projects.setdefault(guest.get('project'), {
            'project': guest.get('project'),
            'project_name': guest.get('project_name'),
            'guests': 0, 'merging_pages': 0})
        entry['guests'] += 1
        entry['merging_pages'] += guest['merging_pages']
    for entry in projects.values():
        saved = (entry['merging_pages'] * sharing // total
                 if total else 0)
        entry['saved_bytes'] = saved * PAGE_SIZE
    return sorted(projects.values(),
                  key=lambda e: (-e['saved_bytes'], e['project'] or ''))


def format_text(status):
    """A short human-readable report."""
    run = {0: 'stopped', 1: 'running', 2: 'unmerged and stopped'}.get(
        status['run'], status['run'])
    tuner = status['tuner']
    lines = [
        'KSM: %s  pages_to_scan=%s sleep_millisecs=%s advisor=%s' % (
            run, status['pages_to_scan'], status['sleep_millisecs'],
            status['advisor_mode'] or 'n/a'),
        'Saved: %.1f MiB (pages_sharing %s, pages_shared %s); kernel '
        'profit %s MiB' % (status['saved_mib'], status['pages_sharing'],
                           status['pages_shared'],
                           _na(status['general_profit_mib'])),
        'Unshared %s, volatile %s, full scans %s' % (
            status['pages_unshared'], status['pages_volatile'],
            status['full_scans']),
        'ksmd CPU: %s%% of one core, nice %s' % (
            _na(status['ksmd_cpu_percent']), _na(status.get('ksmd_nice'))),
        'Tuner: %s' % ('not running' if not tuner else '%s (%s)' % (
            tuner.get('state'), tuner.get('reason'))),
        'Guests (%d):' % len(status['guests']),
    ]
    for guest in status['guests']:
        lines.append('  %-20s %-36s %-44s pid %-8d merging %d pages '
                     '(%.1f MiB)' % (
                         guest['name'], guest.get('instance') or '-',
                         _project(guest), guest['pid'],
                         guest['merging_pages'],
                         guest['merging_pages'] * PAGE_SIZE / MIB))
    for entry in status.get('projects') or ():
        lines.append('Project %s: %d guest%s, saved %.1f MiB' % (
            _project(entry) if entry['project'] else '(not nova)',
            entry['guests'], '' if entry['guests'] == 1 else 's',
            entry['saved_bytes'] / MIB))
    return '\n'.join(lines) + '\n'


def _project(entry):
    """``ID (NAME)``, or ``-`` for a guest nova did not start."""
    if not entry.get('project'):
        return '-'
    if entry.get('project_name'):
        return '%s (%s)' % (entry['project'], entry['project_name'])
    return entry['project']


def _na(value):
    return 'n/a' if value is None else value


def _label(value):
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace(
        '\n', '\\n')


METRICS = (
    # (metric, status key, type, help)
    ('run', 'run', 'gauge', 'KSM run state (0 stopped, 1 merging, 2 '
                            'unmerged).'),
    ('pages_to_scan', 'pages_to_scan', 'gauge',
     'Pages ksmd scans per batch.'),
    ('sleep_millisecs', 'sleep_millisecs', 'gauge',
     'Milliseconds ksmd sleeps between batches.'),
    ('pages_shared', 'pages_shared', 'gauge', 'KSM pages in use.'),
    ('pages_sharing', 'pages_sharing', 'gauge',
     'Pages deduplicated onto KSM pages (memory saved).'),
    ('pages_unshared', 'pages_unshared', 'gauge',
     'Unique pages ksmd keeps checking.'),
    ('pages_volatile', 'pages_volatile', 'gauge',
     'Pages changing too fast to merge.'),
    ('full_scans', 'full_scans', 'counter',
     'Full scans of all mergeable memory.'),
    ('saved_bytes', 'saved_bytes', 'gauge',
     'Memory saved by KSM, in bytes (pages_sharing).'),
    ('general_profit_bytes', 'general_profit', 'gauge',
     "The kernel's KSM profit, in bytes."),
    ('ksmd_cpu_percent', 'ksmd_cpu_percent', 'gauge',
     'ksmd CPU use in percent of one core.'),
)


def format_prometheus(status, prefix='nova_ksm'):
    """node_exporter textfile collector format."""
    lines = []
    for metric, key, kind, text in METRICS:
        if status.get(key) is None:
            continue
        name = '%s_%s' % (prefix, metric)
        lines += ['# HELP %s %s' % (name, text), '# TYPE %s %s' % (name, kind),
                  '%s %s' % (name, status[key])]
    name = '%s_tuner_state' % prefix
    lines += ['# HELP %s State of nova-ksm-tuner (1 for the current one).'
              % name, '# TYPE %s gauge' % name]
    tuner = status.get('tuner') or {'state': 'not_running'}
    lines.append('%s{state="%s"} 1' % (name, _label(tuner.get('state'))))
    name = '%s_guest_merging_pages' % prefix
    lines += ['# HELP %s Pages of the guest merged by KSM.' % name,
              '# TYPE %s gauge' % name]
    for guest in status['guests']:
        lines.append('%s{name="%s",pid="%d",instance="%s",project="%s"} %d'
                     % (name, _label(guest['name']), guest['pid'],
                        _label(guest.get('instance') or ''),
                        _label(guest.get('project') or ''),
                        guest['merging_pages']))
    name = '%s_project_saved_bytes' % prefix
    lines += ['# HELP %s Memory KSM saves, credited to projects by their '
              "guests' merged pages (project=\"\" for processes nova did "
              'not start).' % name, '# TYPE %s gauge' % name]
    for entry in status.get('projects') or ():
        lines.append('%s{project="%s",project_name="%s"} %d' % (
            name, _label(entry['project'] or ''),
            _label(entry['project_name'] or ''), entry['saved_bytes']))
    return '\n'.join(lines) + '\n'
