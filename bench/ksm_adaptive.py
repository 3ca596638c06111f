"""The ``adaptive`` policy of the KSM benchmark: this project's own.

The real ``nova-ksm-tuner`` runs with a temporary nova.conf (its own state
directory and log, the operator's ``[ksm]`` tuning options), and learns
about guests from the real ``nova-ksm-libvirt-hook``, invoked as libvirt
invokes it: through the shim ``nova-ksm-inject ksm install-hook`` writes
(which ends the events the hook ignores in ``sh``), ``DOMAIN OP SUBOP -``
with the domain XML on stdin in a bare environment, for every event
libvirt sends (``prepare``, ``start`` and ``started begin`` around a
start; ``stopped`` and ``release end`` after a stop). As ``install-hook``
does, the hook's settings cache is filled before the first guest (before
that was so, every first wave's guests each read nova.conf, and eight of
them started 0.5-0.9 s later than under the other policies).
"""

import os
import re
import signal
import subprocess
import time

from oslo_log import log as logging

from bench import ksm_policies
from bench import ksm_scenario
from nova_ksm_inject import exception
from nova_ksm_inject.cmd import ksm as cmd_ksm
from nova_ksm_inject.ksm import statedir as ksm_statedir

LOG = logging.getLogger(__name__)

DECISION = re.compile(r' KSM (boost|follow|settled|pressure|loss|idle): ')


class Adaptive(ksm_policies.Policy):
    """The real nova-ksm-tuner, fed by the real libvirt hook."""

    name = 'adaptive'
    START_TIMEOUT = 30.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state_dir = os.path.join(self.workdir, 'adaptive-state')
        self.log = os.path.join(self.workdir, 'tuner.log')
        self.conf = os.path.join(self.workdir, 'nova.conf')
        self.hooks = []
        self.proc = self.stderr = None
        self.hooks_from_libvirt = False
        self.statedir = None
        self.shim = os.path.join(self.workdir, 'hook-shim')
        # The hook's settings cache; the real guests' shim names it too.
        self.hook_cache = os.path.join(self.workdir, 'hook-settings.json')

    def start(self):
        self._write_conf()
        self._install_hook()
        self.stderr = open(os.path.join(self.workdir, 'tuner.err'), 'w')
        tuner = ksm_policies.console_script('nova-ksm-tuner')
        self.proc = subprocess.Popen(
            [tuner, '--config-file', self.conf], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.stderr)
        statedir = self.statedir = ksm_statedir.KsmStateDir(self.state_dir)
        deadline = self.clock() + self.START_TIMEOUT
        while not statedir.tuner_alive():
            if self.proc.poll() is not None or self.clock() > deadline:
                self.stderr.flush()
                with open(self.stderr.name) as f:
                    why = ' '.join(f.read().split()[-40:])
                raise ksm_scenario.BenchFailed(
                    reason='nova-ksm-tuner did not start within %d s: %s'
                           % (self.START_TIMEOUT, why or 'no message'))
            time.sleep(0.05)

    def _install_hook(self):
        """The filled settings cache and our shim, as ``ksm
        install-hook`` leaves a host."""
        hook = ksm_policies.console_script('nova-ksm-libvirt-hook')
        try:
            cmd_ksm.refresh_hook_cache(hook, [self.conf], self.hook_cache)
        except exception.NovaKsmInjectError as err:
            raise ksm_scenario.BenchFailed(reason=str(err)) from err
        if self.hooks_from_libvirt:
            return  # the real guests' libvirtd has the shim
        with open(self.shim, 'w') as f:
            f.write(cmd_ksm.hook_shim(hook, [self.conf], self.hook_cache))
        os.chmod(self.shim, 0o755)

    def _write_conf(self):
        s = self.settings
        ksm = {'policy': 'adaptive', 'enabled': 'auto',
               'cpu_budget_percent': s.cpu_budget_percent,
               'poll_interval': s.poll_interval,
               'maintenance_scan_seconds': s.maintenance_scan_seconds,
               'settled_cpu_percent': s.settled_cpu_percent,
               'pressure_cpu_budget_percent': s.pressure_cpu_budget_percent,
               'pressure_memavailable_percent':
                   s.pressure_memavailable_percent,
               'unmerge_on_loss': str(s.unmerge_on_loss).lower(),
               'guest_record_grace_seconds': s.guest_record_grace_seconds,
               'state_dir': self.state_dir, 'connection_uri': '',
               'hook_log_file': os.path.join(self.workdir, 'hook.log'),
               'restore_on_exit': 'false'}
        with open(self.conf, 'w') as f:
            f.write('[DEFAULT]\nlog_file = %s\n[ksm]\n' % self.log)
            f.writelines('%s = %s\n' % item for item in sorted(ksm.items()))

    def guest_starting(self, guest):
        self._hook(guest, 'prepare', 'begin')
        self._hook(guest, 'start', 'begin')

    def guest_started(self, guest):
        self._hook(guest, 'started', 'begin')

    def guest_stopped(self, guest):
        self._hook(guest, 'stopped', 'end')
        self._hook(guest, 'release', 'end')

    def _hook(self, guest, op, subop):
        """Run the hook as libvirt does; record its time and CPU."""
        if self.hooks_from_libvirt:
            return  # real guests: libvirt runs the hook itself
        began = self.clock()
        proc = subprocess.Popen(
            [self.shim, guest.name, op, subop, '-'], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=self.stderr,
            env={'PATH': ksm_policies.SYSTEM_PATH})
        proc.stdin.write(guest.xml().encode())
        proc.stdin.close()
        # wait4, not wait: the hook's own CPU time is part of the cost.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            LOG.warning('nova-ksm-libvirt-hook %s %s %s exited %d',
                        guest.name, op, subop, proc.returncode)
        self.hooks.append({'guest': guest.name, 'op': op, 'subop': subop,
                           'seconds': self.clock() - began,
                           'cpu': usage.ru_utime + usage.ru_stime})

    def state(self):
        """The state the tuner published last (boost, follow...)."""
        if self.statedir is None:
            return None
        return (self.statedir.tuner() or {}).get('state')

    def stop(self):
        if self.proc is None:
            return
        self.cpu = ksm_policies.process_cpu(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()

    def report(self):
        try:
            with open(self.log) as f:
                # "2025-01-31 12:00:00.123 PID INFO name [-] KSM boost: ..."
                decisions = [line[11:23] + ' ' + line.split(' KSM ', 1)[1]
                             .rstrip() for line in f
                             if DECISION.search(line)]
        except OSError:
            decisions = []
        return {'controller_cpu': self.cpu,
                'hook_runs': len(self.hooks),
                'hook_seconds': round(sum(h['seconds'] for h in self.hooks),
                                      2),
                'hook_cpu': round(sum(h['cpu'] for h in self.hooks), 2),
                'hook_cpu_by_event': self._hook_cpu_by_event(),
                'decisions': decisions,
                'cpu_budget_percent': self.settings.cpu_budget_percent,
                'poll_interval': self.settings.poll_interval}


    def _hook_cpu_by_event(self):
        """{"op subop": [runs, mean CPU seconds]}."""
        totals = {}
        for h in self.hooks:
            entry = totals.setdefault('%s %s' % (h['op'], h['subop']), [0, 0])
            entry[0] += 1
            entry[1] += h['cpu']
        return {event: [runs, round(cpu / runs, 3)]
                for event, (runs, cpu) in sorted(totals.items())}
