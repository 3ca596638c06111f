"""The KSM policies the benchmark compares, each set up as operators do.

* ``default``: the kernel's defaults (100 pages per 20 ms), ksmd running.
* ``static-max``: ``pages_to_scan = 1000000000``, the usual fix.
* ``ksmtuned``: Debian's ``/usr/sbin/ksmtuned`` run for real with its
  shipped ``/etc/ksmtuned.conf``; only ``DEBUG``, ``LOGFILE`` and
  ``PIDFILE`` come from its environment, to read what it saw.
* ``advisor``: the kernel's advisor (``advisor_mode = scan-time``) with
  its default CPU cap, batch limits and target scan time.
* ``adaptive``: the real ``nova-ksm-tuner`` and libvirt hook
  (:mod:`ksm_adaptive`).

Every policy starts from the kernel's defaults with ksmd stopped and
everything unmerged (the benchmark resets KSM between policies).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

from oslo_log import log as logging

from nova_ksm_inject import procfs

LOG = logging.getLogger(__name__)

KSMTUNED = '/usr/sbin/ksmtuned'
STATIC_MAX_PAGES = 1000000000
SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'

# mm/ksm.c's defaults: every policy starts from them.
KERNEL_DEFAULTS = {
    'advisor_mode': 'none', 'pages_to_scan': 100, 'sleep_millisecs': 20,
    'use_zero_pages': 0, 'smart_scan': 1,
    'stable_node_chains_prune_millisecs': 2000, 'merge_across_nodes': 1,
    'max_page_sharing': 256, 'advisor_max_cpu': 70,
    'advisor_min_pages_to_scan': 500, 'advisor_max_pages_to_scan': 30000,
    'advisor_target_scan_time': 200, 'run': 0,
}
ADVISOR_KNOBS = ('advisor_max_cpu', 'advisor_min_pages_to_scan',
                 'advisor_max_pages_to_scan', 'advisor_target_scan_time')


def process_cpu(pid):
    """CPU seconds of ``pid`` and of the children it waited for."""
    try:
        info = procfs.stat(pid)
    except procfs.ProcError:
        return None
    return (info.utime + info.stime + info.cutime + info.cstime) / (
        procfs.CLOCK_TICKS)


def console_script(name):
    """Our console script next to this Python, else on PATH."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else shutil.which(name)


class Policy(object):
    """A policy with fixed knobs; subclasses add a controller process."""

    name = None
    knobs = {}

    def __init__(self, host, workdir, settings=None, clock=time.monotonic):
        self.host = host
        self.workdir = workdir
        self.settings = settings
        self.clock = clock
        self.cpu = None  # the controller's CPU seconds, when it has one

    def start(self):
        if self.knobs:
            self.host.apply(self.knobs)

    def guest_starting(self, guest):
        """libvirt is about to start ``guest`` (before QEMU runs)."""

    def guest_started(self, guest):
        """QEMU of ``guest`` runs."""

    def guest_stopped(self, guest):
        """QEMU of ``guest`` is gone."""

    def stop(self):
        """Stop the controller, if any."""

    def state(self):
        """The controller's state now, when it publishes one."""
        return None

    def report(self):
        return {'knobs': {k: self.knobs[k] for k in sorted(self.knobs)}}


class KernelDefault(Policy):
    """KSM switched on, nothing tuned."""

    name = 'default'
    knobs = {'pages_to_scan': 100, 'sleep_millisecs': 20, 'run': 1}


class StaticMax(Policy):
    """What operators set after reading that the default is slow."""

    name = 'static-max'
    knobs = {'pages_to_scan': STATIC_MAX_PAGES, 'sleep_millisecs': 20,
             'run': 1}


class Advisor(Policy):
    """The kernel's own scan-time advisor (Linux 6.8+), its defaults."""

    name = 'advisor'
    knobs = dict({k: KERNEL_DEFAULTS[k] for k in ADVISOR_KNOBS},
                 advisor_mode='scan-time', run=1)


class Ksmtuned(Policy):
    """Debian's ksmtuned: a shell loop that re-tunes every 60 s."""

    name = 'ksmtuned'
    CHECK = re.compile(r'committed (\d+) free (\d+)$')
    SETTING = re.compile(r': (total|sleep|thres) (\d+)$')
    START = re.compile(r'KSMCTL start (\d+) (\d+)$')

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = os.path.join(self.workdir, 'ksmtuned.log')
        self.pidfile = os.path.join(self.workdir, 'ksmtuned.pid')
        self.pgid = self.pid = None

    def start(self):
        env = {'PATH': SYSTEM_PATH, 'DEBUG': '1', 'LOGFILE': self.log,
               'PIDFILE': self.pidfile}
        # The script forks its loop and exits; a session of its own lets
        # us stop the loop and its sleep by process group.
        proc = subprocess.Popen([KSMTUNED], env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        proc.wait(timeout=30)
        self.pgid = proc.pid
        with open(self.pidfile) as f:
            self.pid = int(f.read().strip())
        LOG.info('ksmtuned started (loop pid %d), log %s', self.pid,
                 self.log)

    def stop(self):
        if self.pgid is None:
            return
        self.cpu = process_cpu(self.pid)
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = self.clock() + 10
        while self.clock() < deadline and _alive(self.pid):
            time.sleep(0.05)

    def report(self):
        try:
            with open(self.log) as f:
                lines = [line.rstrip('\n') for line in f]
        except OSError:
            lines = []
        return dict(parse_ksmtuned_log(lines), controller_cpu=self.cpu,
                    interval_seconds=_shipped_interval())


def parse_ksmtuned_log(lines):
    """What ksmtuned's debug log says it saw and did."""
    seen = {'checks': [], 'log': lines[-40:]}
    for line in lines:
        setting = Ksmtuned.SETTING.search(line)
        check = Ksmtuned.CHECK.search(line)
        start = Ksmtuned.START.search(line)
        if setting:
            seen[setting.group(1) + ('_ms' if setting.group(1) == 'sleep'
                                     else '_kib')] = int(setting.group(2))
        elif check:
            seen['checks'].append({'committed_kib': int(check.group(1)),
                                   'free_kib': int(check.group(2))})
        elif line.endswith('stop ksm') and seen['checks']:
            seen['checks'][-1]['action'] = 'stop'
        elif start and seen['checks']:
            seen['checks'][-1]['action'] = 'start %s pages / %s ms' % (
                start.group(1), start.group(2))
    return seen


def _shipped_interval(path='/etc/ksmtuned.conf'):
    try:
        with open(path) as f:
            for line in f:
                match = re.match(r'\s*KSM_MONITOR_INTERVAL=(\d+)', line)
                if match:
                    return int(match.group(1))
    except OSError:
        pass
    return 60  # the script's default


def _alive(pid):
    return procfs.process_matches(pid)
