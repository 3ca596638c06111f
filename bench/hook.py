"""What one libvirt hook run costs (root).

libvirt runs ``nova-ksm-libvirt-hook`` synchronously at each of the five
lifecycle events of every guest (``prepare begin``, ``start begin``,
``started begin``, ``stopped end``, ``release end``). This runs the shim
``nova-ksm-inject ksm install-hook`` writes, and through it the real
console script, exactly so: a domain XML on stdin and libvirt's cleared
environment, for ``--guests`` guests; it measures each run's wall time and
CPU time (the shim's and the hook's, from ``wait4``), two ways, guest by
guest in turn so that both see the same load:

* ``full``: the settings cache removed before every run, so nova.conf is
  read through oslo.config each time (what every run cost before the
  cache);
* ``cached``: nova.conf unchanged since the previous run.

KSM is not touched: the hooks run in a private mount namespace where a
copy of the KSM tree is bound over ``/sys/kernel/mm/ksm``.

    python -m bench.hook [--guests 20] [--json FILE]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from nova_ksm_inject.cmd import ksm as cmd_ksm
from nova_ksm_inject.ksm.hook import settings_cache

KSM = '/sys/kernel/mm/ksm'
MARKER = 'nova-ksm-inject-bench'
EVENTS = (('prepare', 'begin'), ('start', 'begin'), ('started', 'begin'),
          ('stopped', 'end'), ('release', 'end'))
MODES = ('full', 'cached')
SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'
XML = ("<domain type='kvm'><name>%(name)s</name><uuid>%(uuid)s</uuid>"
       "<memory unit='KiB'>524288</memory></domain>")
CONF = """[ksm]
enabled = auto
policy = static
connection_uri =
state_dir = %(dir)s/state
hook_log_file = %(dir)s/hook.log
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m bench.hook',
        description='Wall and CPU time of one libvirt hook run per event.')
    parser.add_argument('--guests', type=int, default=20,
                        help='guests per mode, five events each (default '
                             '%(default)s)')
    parser.add_argument('--json', metavar='FILE', help='write results')
    parser.add_argument('--inner', metavar='WORKDIR', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def fake_ksm_tree(directory):
    """A copy of this host's KSM tree, with a marker no kernel has."""
    os.makedirs(directory)
    for name in os.listdir(KSM):
        with open(os.path.join(KSM, name)) as f:
            value = f.read()
        with open(os.path.join(directory, name), 'w') as f:
            f.write(value)
    open(os.path.join(directory, MARKER), 'w').close()


def hook_command():
    path = os.path.join(os.path.dirname(sys.executable),
                        'nova-ksm-libvirt-hook')
    return path if os.access(path, os.X_OK) else shutil.which(
        'nova-ksm-libvirt-hook')


def run_once(command, env, guest, op, subop):
    """(wall seconds, CPU seconds) of one hook run."""
    xml = XML % {'name': guest, 'uuid': guest}
    began = time.monotonic()
    proc = subprocess.Popen(command + [guest, op, subop, '-'],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    proc.stdin.write(xml.encode())
    proc.stdin.close()
    # wait4: the hook's own CPU time, not the interpreter running this.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode or err:
        raise RuntimeError('hook %s %s exited %d: %s'
                           % (op, subop, proc.returncode, err.strip()))
    return wall, usage.ru_utime + usage.ru_stime


def measure(workdir, guests):
    """{mode: {'op subop': [(wall, cpu)...]}}."""
    conf = os.path.join(workdir, 'nova.conf')
    with open(conf, 'w') as f:
        f.write(CONF % {'dir': workdir})
    cache = os.path.join(workdir, 'hook-cache.json')
    env = {'PATH': SYSTEM_PATH, settings_cache.CACHE_ENV: cache}
    shim = os.path.join(workdir, 'qemu-hook')
    with open(shim, 'w') as f:
        f.write(cmd_ksm.hook_shim(hook_command(), [conf]))
    os.chmod(shim, 0o755)
    command = [shim]
    results = {mode: {} for mode in MODES}
    # Modes alternate guest by guest: both see the same load on the host.
    for i in range(guests):
        for mode in MODES:
            guest = 'bench-%s-%02d' % (mode, i)
            for op, subop in EVENTS:
                if mode == 'full' and os.path.exists(cache):
                    os.unlink(cache)
                results[mode].setdefault('%s %s' % (op, subop), []).append(
                    run_once(command, env, guest, op, subop))
    return results


def summarize(results):
    """Rows of (mode, event, wall ms median/min/max, CPU ms likewise)."""
    rows = []
    for mode, events in results.items():
        for event, runs in events.items():
            walls = [w * 1000 for w, _ in runs]
            cpus = [c * 1000 for _, c in runs]
            rows.append({'mode': mode, 'event': event, 'runs': len(runs),
                         'wall_ms': _stats(walls), 'cpu_ms': _stats(cpus)})
    return rows


def _stats(values):
    return {'median': round(statistics.median(values), 1),
            'min': round(min(values), 1), 'max': round(max(values), 1)}


def format_table(rows):
    lines = ['%-7s %-15s %4s  %-22s %-22s' % (
        'mode', 'event', 'runs', 'wall ms median (min-max)',
        'CPU ms median (min-max)')]
    for row in rows:
        lines.append('%-7s %-15s %4d  %-22s %-22s' % (
            row['mode'], row['event'], row['runs'], _cell(row['wall_ms']),
            _cell(row['cpu_ms'])))
    return '\n'.join(lines)


def _cell(stats):
    return '%.1f (%.1f-%.1f)' % (stats['median'], stats['min'],
                                 stats['max'])


def inner(args):
    """Inside the namespace: refuse unless KSM is our copy."""
    if not os.path.exists(os.path.join(KSM, MARKER)):
        print('error: %s is not the benchmark copy; not running' % KSM,
              file=sys.stderr)
        return 1
    rows = summarize(measure(args.inner, args.guests))
    print(format_table(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'guests': args.guests, 'rows': rows}, f, indent=2)
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.inner:
        return inner(args)
    if os.geteuid() != 0 or not os.path.isdir(KSM):
        print('error: needs root and %s (a private copy of it is bound '
              'over it for the hooks)' % KSM, file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix='nova-ksm-bench-hook-')
    try:
        fake_ksm_tree(os.path.join(workdir, 'ksm'))
        command = [sys.executable, '-m', 'bench.hook',
                   '--inner', workdir, '--guests', str(args.guests)]
        if args.json:
            command += ['--json', os.path.abspath(args.json)]
        return subprocess.call(
            ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
             'mount --bind "$1" %s && shift && exec "$@"' % KSM, 'sh',
             os.path.join(workdir, 'ksm')] + command)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
