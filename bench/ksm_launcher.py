"""Synthetic guests of the KSM benchmark, started and stopped as
processes that look like QEMU (:mod:`ksm_guest`).

:class:`GuestLauncher` is what the scenario runner drives; the real-guest
launcher (:mod:`ksm_realguest`) has the same interface.
"""

import os
import subprocess
import sys
import threading

from bench import ksm_scenario
from tests.lib import ksm_guest

GUEST_CODE = 'from tests.lib import ksm_guest; ksm_guest.main()'
READY_TIMEOUT = 120.0


class GuestLauncher(object):
    """Starts and stops guest processes named like QEMU.

    ``argv[0]`` must read ``qemu-system-x86_64`` for ksmtuned's ``pgrep
    -f '^qemu-system...'``: the interpreter is reached through a symlink
    of that name in ``workdir`` put first in the guests' PATH.
    """

    def __init__(self, scenario, workdir):
        self.scenario = scenario
        self.workdir = workdir
        bindir = os.path.join(workdir, 'bin')
        os.makedirs(bindir, exist_ok=True)
        link = os.path.join(bindir, ksm_guest.QEMU_ARGV0)
        if not os.path.lexists(link):
            os.symlink(os.path.realpath(sys.executable), link)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(ksm_guest.__file__))))
        self.env = {'PATH': bindir + os.pathsep + os.environ.get(
            'PATH', '/usr/bin:/bin'), 'PYTHONPATH': package_root}
        self.running = {}
        self._lock = threading.Lock()

    def _spawn(self, key, argv0, args):
        proc = subprocess.Popen(
            [argv0, '-c', GUEST_CODE] + args, env=self.env, cwd=self.workdir,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        with self._lock:
            self.running[key] = proc
        return proc

    def start(self):
        """Nothing to start for processes (a libvirtd for real guests)."""

    def spawn(self, guest):
        """Start ``guest``; :meth:`wait_ready` waits for its memory."""
        s = self.scenario
        return self._spawn(guest.name, ksm_guest.QEMU_ARGV0, [
            '-enable-kvm', '-name', 'guest=%s' % guest.name,
            '-m', str(guest.mib), '--identical', str(s.identical),
            '--volatile', str(s.volatile), '--rewrite-seconds',
            str(s.rewrite_seconds), '--tag', str(guest.tag)])

    def spawn_ballast(self, mib, floor_mib=4096):
        """A plain process holding ``mib`` MiB nobody may merge."""
        proc = self._spawn('ballast', sys.executable, [
            '-m', str(mib), '--ballast', '--volatile', '0', '--tag', '0',
            '--floor-mib', str(floor_mib)])
        # Filling takes up to ~10 s per GiB where page faults are slow.
        self.wait_ready('ballast', READY_TIMEOUT + 10.0 * mib / 1024)
        return proc

    def wait_ready(self, name, timeout=READY_TIMEOUT):
        """Block until the guest has filled its memory."""
        proc = self.running[name]
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline()
        finally:
            timer.cancel()
        if line != ksm_guest.READY:
            raise ksm_scenario.BenchFailed(
                reason='synthetic guest %s (pid %d) exited before filling '
                       'its memory; is the host out of memory?'
                       % (name, proc.pid))

    def pids(self):
        with self._lock:
            return {name: proc.pid for name, proc in self.running.items()
                    if name != 'ballast'}

    def stop(self, name):
        """Stop one guest (SIGTERM) and reap it."""
        with self._lock:
            proc = self.running.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()

    def stop_all(self):
        for name in list(self.running):
            self.stop(name)
