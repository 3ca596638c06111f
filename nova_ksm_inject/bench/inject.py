"""Injection benchmark: each handler against virt-customize (root).

Builds one 1 GiB guest disk (a whole-disk ext4 with a minimal Debian tree)
and injects the same key, network config, metadata, admin password and
file into it, per handler: ``loop`` on a raw copy, ``qsd`` and ``guestfs``
on fresh qcow2 overlays of it; then, in the same run and on the same
image, ``virt-customize --ssh-inject ... --root-password ... --upload ...``
(what operators would otherwise use). Each run is timed end to end as
nova-compute calls it (``api.inject_data``: image inspection, mount,
write, teardown); ``--cli`` also times the ``nova-ksm-inject inject``
command (a new Python process) for the fast handlers. The result of each
handler is checked with debugfs. Prints median and spread per handler and
the speed-up over virt-customize.

    python -m nova_ksm_inject.bench.inject [--runs 20] [--slow-runs 3]
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

from oslo_log import log as logging

from nova_ksm_inject.bench import inject_privsep
from nova_ksm_inject.cmd import common
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject

KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBench'
       'Bench bench@nova-ksm-inject')
PASSWORD = 'bench-password'
NET = ('auto eth0\niface eth0 inet static\n    address 192.0.2.10\n'
       '    netmask 255.255.255.0\n    gateway 192.0.2.1\n')
METADATA = {'role': 'lab', 'seat': '7'}
MOTD = b'injected by the benchmark\n'
TREE = {'etc/passwd': 'root:x:0:0:root:/root:/bin/bash\n',
        'etc/shadow': 'root:*:19000:0:99999:7:::\n',
        'etc/group': 'root:x:0:\n',
        'etc/os-release': 'ID=debian\nNAME="Debian GNU/Linux"\n'
                          'VERSION_ID="12"\n',
        'etc/debian_version': '12.0\n',
        'etc/fstab': '/dev/sda / ext4 defaults 0 1\n',
        'etc/network/.keep': '', 'bin/.keep': '', 'root/.profile': ''}
TARGETS = {'loop': 0.1, 'qsd': 0.5, 'loop (privsep)': 0.1,
           'qsd (privsep)': 0.2}
MIN_SPEEDUP = {'qsd': 40}


def sh(*cmd, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit('bench: %s failed (%d): %s' % (cmd[0], proc.returncode,
                                                proc.stderr.strip()[-500:]))
    return proc.stdout


def build_base(workdir):
    """The 1 GiB guest disk every case starts from."""
    tree = os.path.join(workdir, 'tree')
    for rel, text in TREE.items():
        path = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
    os.chmod(os.path.join(tree, 'etc/shadow'), 0o640)
    base = os.path.join(workdir, 'base.raw')
    sh('mkfs.ext4', '-q', '-F', '-d', tree, base, '1G')
    return base


def request():
    return inject.InjectionRequest(key=KEY, net=NET, metadata=METADATA,
                                   admin_password=PASSWORD,
                                   files=[('/etc/motd', MOTD)])


class Case:
    """One way of injecting: ``prepare`` (untimed) returns the image the
    timed ``run`` writes into; ``check`` reads the result back."""

    def __init__(self, name, image_kind, prepare, run, fmt):
        self.name, self.image_kind = name, image_kind
        self.prepare, self.run, self.fmt = prepare, run, fmt

    def check(self, image, workdir):
        flat = image
        if self.fmt == 'qcow2':
            flat = os.path.join(workdir, 'check.raw')
            sh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', image, flat)
        keys = sh('debugfs', '-R', 'cat /root/.ssh/authorized_keys', flat)
        motd = sh('debugfs', '-R', 'cat /etc/motd', flat)
        shadow = sh('debugfs', '-R', 'cat /etc/shadow', flat)
        if KEY not in keys or MOTD.decode() != motd or '$' not in shadow:
            sys.exit('bench: %s did not inject everything' % self.name)


def make_cases(base, workdir, cli, user=None, workers=()):
    def overlay():
        path = os.path.join(workdir, 'overlay.qcow2')
        if os.path.exists(path):
            os.unlink(path)
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F',
           'raw', path)
        return path

    def loop_copy():
        path = os.path.join(workdir, 'loop.raw')
        if not os.path.exists(path):
            sh('cp', '--sparse=always', base, path)
        return path

    def api_run(handler, fmt):
        return lambda image: api.inject_data(
            image, request(), fmt=fmt, partition=0, handler_names=[handler],
            use_cow=(handler != 'loop'), trusted_dirs=[workdir])

    cases = {
        'loop': Case('loop', 'raw', loop_copy, api_run('loop', 'raw'), 'raw'),
        'qsd': Case('qsd', 'qcow2 overlay', overlay, api_run('qsd', 'qcow2'),
                    'qcow2'),
        'guestfs': Case('guestfs', 'qcow2 overlay', overlay,
                        api_run('guestfs', 'qcow2'), 'qcow2'),
        'virt-customize': Case('virt-customize', 'qcow2 overlay', overlay,
                               virt_customize(workdir), 'qcow2'),
    }
    if user:
        cases.update(inject_privsep.cases(Case, user, workdir, loop_copy,
                                          overlay, workers))
    if cli:
        cases['loop (cli)'] = Case('loop (cli)', 'raw', loop_copy,
                                   cli_run(workdir, 'loop', 'raw'), 'raw')
        cases['qsd (cli)'] = Case('qsd (cli)', 'qcow2 overlay', overlay,
                                  cli_run(workdir, 'qsd', 'qcow2'), 'qcow2')
    return cases


def _inputs(workdir):
    paths = {}
    for name, data in (('key.pub', KEY + '\n'), ('password', PASSWORD + '\n'),
                       ('net', NET), ('meta.js', json.dumps(METADATA)),
                       ('motd', MOTD.decode())):
        paths[name] = os.path.join(workdir, name)
        with open(paths[name], 'w') as f:
            f.write(data)
    return paths


def virt_customize(workdir):
    paths = _inputs(workdir)
    env = dict(os.environ, LIBGUESTFS_BACKEND=CONF.guestfs.backend)
    if CONF.guestfs.backend_settings:
        env['LIBGUESTFS_BACKEND_SETTINGS'] = ':'.join(
            CONF.guestfs.backend_settings)
    return lambda image: sh(
        'virt-customize', '-q', '--no-network', '--format', 'qcow2', '-a',
        image, '--ssh-inject', 'root:file:%s' % paths['key.pub'],
        '--root-password', 'file:%s' % paths['password'],
        '--upload', '%s:/etc/network/interfaces' % paths['net'],
        '--upload', '%s:/meta.js' % paths['meta.js'],
        '--upload', '%s:/etc/motd' % paths['motd'], env=env)


def cli_run(workdir, handler, fmt):
    paths = _inputs(workdir)
    command = os.path.join(os.path.dirname(sys.executable), 'nova-ksm-inject')
    conf = os.path.join(workdir, 'nova.conf')
    with open(conf, 'w') as f:
        f.write('[inject]\nstate_dir = %s\n' % CONF.inject.state_dir)
    return lambda image: sh(
        command, 'inject', image, '--config-file', conf, '--format', fmt,
        '--partition', '0', '--handlers', handler,
        '--cow' if handler != 'loop' else '--no-cow',
        '--trusted-backing-dir', workdir, '--key-file', paths['key.pub'],
        '--net-file', paths['net'], '--metadata', 'role=lab', '--metadata',
        'seat=7', '--admin-password-file', paths['password'],
        '--file', '/etc/motd=%s' % paths['motd'])


def measure(case, runs, workdir):
    times = []
    for _ in range(runs):
        image = case.prepare()
        started = time.perf_counter()
        case.run(image)
        times.append(time.perf_counter() - started)
    case.check(image, workdir)
    return times


def summary(name, kind, times, reference):
    median = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [median] * 3
    return {'handler': name, 'image': kind, 'runs': len(times),
            'median': median, 'min': min(times), 'max': max(times),
            'iqr': q[2] - q[0],
            'speedup': reference / median if reference else None}


def print_table(rows):
    header = ('handler', 'image', 'runs', 'median', 'IQR', 'min - max',
              'vs virt-customize')
    lines = [header]
    for r in rows:
        lines.append((r['handler'], r['image'], str(r['runs']),
                      '%.3f s' % r['median'], '%.3f s' % r['iqr'],
                      '%.3f - %.3f s' % (r['min'], r['max']),
                      '%.0fx faster' % r['speedup'] if r['speedup'] and
                      r['handler'] != 'virt-customize' else '1x'
                      if r['speedup'] else 'n/a'))
    widths = [max(len(line[i]) for line in lines) for i in range(7)]
    rule = '  '.join('=' * w for w in widths)
    print(rule)
    for index, line in enumerate(lines):
        cells = zip(line, widths, strict=True)
        print('  '.join(c.ljust(w) for c, w in cells).rstrip())
        if index == 0:
            print(rule)
    print(rule)


def check_targets(rows):
    by_name = {r['handler']: r for r in rows}
    for name, limit in TARGETS.items():
        if name in by_name:
            ok = by_name[name]['median'] < limit
            print('target %s median < %.1f s: %s' % (name, limit,
                                                     'met' if ok else
                                                     'MISSED'))
    for name, factor in MIN_SPEEDUP.items():
        speedup = by_name.get(name, {}).get('speedup')
        if speedup:
            print('target %s >= %dx faster than virt-customize: %s' % (
                name, factor, 'met' if speedup >= factor else 'MISSED'))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m nova_ksm_inject.bench.inject', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=20,
                        help='runs of loop and qsd (default 20)')
    parser.add_argument('--slow-runs', type=int, default=3,
                        help='runs of guestfs and virt-customize (default 3)')
    parser.add_argument('--cases', default='loop,qsd,guestfs,virt-customize',
                        help='comma-separated cases to run')
    parser.add_argument('--cli', action='store_true',
                        help='also time the nova-ksm-inject command for loop '
                             'and qsd')
    parser.add_argument('--as-user', metavar='USER',
                        help='also time loop and qsd from USER, not root, '
                             'through a warm privsep daemon (USER needs a '
                             'sudoers rule for privsep-helper)')
    parser.add_argument('--json', metavar='FILE', help='write results here')
    parser.add_argument('--config-file', action='append', default=[],
                        help='nova.conf for [guestfs] settings')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit('bench: run as root (loop devices, mounts, FUSE)')
    logging.register_options(CONF)
    CONF([], project='nova', default_config_files=args.config_file,
         default_config_dirs=[])
    if args.as_user:
        # The daemon reads its configuration from here: only root may
        # be able to write it, so not under /tmp.
        os.makedirs(inject_privsep.DEFAULT_WORKDIR, mode=0o755,
                    exist_ok=True)
        workdir = tempfile.mkdtemp(prefix='run-',
                                   dir=inject_privsep.DEFAULT_WORKDIR)
        os.chmod(workdir, 0o755)
    else:
        workdir = tempfile.mkdtemp(prefix='nova-ksm-inject-bench-')
    workers = []
    CONF.set_override('state_dir', os.path.join(workdir, 'state'),
                      group='inject')
    if not args.config_file:  # this kind of host: KVM unusable by qemu
        CONF.set_override('backend_settings', ['force_tcg'], group='guestfs')
    try:
        cases = make_cases(build_base(workdir), workdir, args.cli,
                           args.as_user, workers)
        wanted = [n for n in args.cases.split(',') if n]
        if args.as_user:
            wanted += ['loop (privsep)', 'qsd (privsep)']
        if args.cli:
            wanted += ['loop (cli)', 'qsd (cli)']
        results = {}
        for name in wanted:
            slow = name in ('guestfs', 'virt-customize')
            results[name] = measure(cases[name], args.slow_runs if slow else
                                    args.runs, workdir)
            print('%-16s done: median %.3f s' % (
                name, statistics.median(results[name])), flush=True)
    finally:
        for worker in workers:
            worker.close()
        shutil.rmtree(workdir, ignore_errors=True)
    reference = statistics.median(results['virt-customize']) \
        if 'virt-customize' in results else None
    rows = [summary(n, cases[n].image_kind, t, reference)
            for n, t in results.items()]
    print_table(rows)
    check_targets(rows)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'rows': rows, 'raw': results}, f, indent=2)
    return 0


if __name__ == '__main__':
    # Expected failures (no handler could mount, a tool missing) print one
    # line, like every other command of the package.
    sys.exit(common.run(main))
