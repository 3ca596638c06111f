"""Injection benchmark rows for an unprivileged caller, as nova-compute.

``--as-user USER`` adds the cases ``fuse2fs (user)``: a worker process
runs as USER (``runuser``), like nova-compute as the ``nova`` user, and
injects in its own process, with no privilege at all; and ``loop
(privsep)`` and ``qsd (privsep)``, whose worker injects through the real
``[privsep_inject]`` daemon, started once with ``sudo <this
venv>/nova-ksm-inject-privsep-helper`` and kept warm as inside
nova-compute; the first injection of each worker (a daemon start, cold
caches) is not timed. USER needs a sudoers rule for that helper for the
privsep rows (none for fuse2fs), and the bench's work directory must be
one only root can write (the daemon refuses configuration anyone else
could have written): by default under /var/lib. The helper's fixed list
of configuration files (``/etc/nova-ksm-inject/privsep-helper.conf``) is
pointed at the bench's nova.conf while it runs, then restored.
"""

import os
import shutil
import subprocess
import sys

from nova_ksm_inject.cmd.privsep_helper import SETTINGS
from nova_ksm_inject.disk import api

DEFAULT_WORKDIR = '/var/lib/nova-ksm-inject-bench'
# The worker finds bench/ in the repository (run from anywhere: its cwd is
# /), after the installed package, which it measures.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_CODE = ('import sys; sys.path.append(%r); '
               'from bench import inject_privsep; '
               'sys.exit(inject_privsep.worker_main(*sys.argv[1:4]))'
               % REPO_ROOT)


def write_conf(workdir, user, trusted):
    """A root-owned nova.conf for the workers and their privsep daemon."""
    conf = os.path.join(workdir, 'nova-privsep.conf')
    helper = 'sudo %s/nova-ksm-inject-privsep-helper' % os.path.dirname(
        sys.executable)
    user_state = os.path.join(workdir, 'state-user')
    os.mkdir(user_state, 0o700)
    shutil.chown(user_state, user)
    with open(conf, 'w') as f:
        f.write('[DEFAULT]\ninstances_path = %s\n[inject]\n'
                'trusted_backing_dirs = %s\nstate_dir = %s\n'
                'user_state_dir = %s\n[privsep_inject]\nhelper_command = %s\n'
                % (workdir, ','.join(trusted),
                   os.path.join(workdir, 'state-privsep'), user_state,
                   helper))
    os.chmod(conf, 0o644)
    return conf


class HelperSettings:
    """Points the privsep helper's fixed settings at ``conf``; restores
    what was there on :meth:`close`."""

    def __init__(self, conf):
        os.makedirs(os.path.dirname(SETTINGS), mode=0o755, exist_ok=True)
        self.saved = None
        if os.path.exists(SETTINGS):
            with open(SETTINGS) as f:
                self.saved = f.read()
        with open(SETTINGS, 'w') as f:
            f.write('# nova-ksm-inject injection benchmark (restored '
                    'afterwards)\n[privsep_helper]\nconfig_files = %s\n'
                    % conf)
        os.chmod(SETTINGS, 0o644)

    def close(self):
        if self.saved is None:
            os.unlink(SETTINGS)
            return
        with open(SETTINGS, 'w') as f:
            f.write(self.saved)


class Worker:
    """The unprivileged injecting process; one per handler."""

    def __init__(self, user, conf, handler, fmt):
        self.proc = subprocess.Popen(
            ['runuser', '-u', user, '--', 'env', '-i',
             'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/nonexistent',
             sys.executable, '-c', WORKER_CODE, conf, handler, fmt],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd='/')
        self.warm = False
        #: The handler's own seconds per injection (the chain's record:
        #: mount, writes, unmount; not the image inspection).
        self.handler_seconds = []

    def inject(self, image):
        self.proc.stdin.write(image + '\n')
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        if answer[:1] != ['ok']:
            sys.exit('bench: the unprivileged worker failed on %s: %s'
                     % (image, ' '.join(answer) or 'it exited (see above)'))
        self.handler_seconds.append(float(answer[1]))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cases(case_class, user, workdir, loop_copy, overlay, workers, trusted):
    """``fuse2fs (user)``, ``loop (privsep)`` and ``qsd (privsep)``, as
    ``case_class`` instances (``bench.inject.Case``); ``workers`` gets
    what to close."""
    conf = write_conf(workdir, user, trusted)
    workers.append(HelperSettings(conf))
    found = {}
    for name, handler, fmt, kind, make in (
            ('fuse2fs (user)', 'fuse2fs', 'qcow2', 'qcow2 overlay',
             lambda: overlay(user)),
            ('loop (privsep)', 'loop', 'raw', 'raw', loop_copy),
            ('qsd (privsep)', 'qsd', 'qcow2', 'qcow2 overlay',
             lambda: overlay(user))):
        worker = Worker(user, conf, handler, fmt)
        workers.append(worker)

        def prepare(make=make, worker=worker):
            if not worker.warm:  # a daemon's start is not timed
                worker.inject(make())
                worker.handler_seconds.clear()
                worker.warm = True
            return make()
        found[name] = case_class(name, kind, prepare, worker.inject, fmt)
        found[name].worker = worker
    return found


def worker_main(conf, handler, fmt):
    """Inject each image path read from stdin; answer ``ok`` or an error."""
    from bench import inject as bench
    from nova_ksm_inject.cmd import common

    common.load_config([conf], quiet=True)
    common.init_privsep()
    for line in sys.stdin:
        try:
            result = api.inject_data(line.strip(), bench.request(), fmt=fmt,
                                     partition=0, handler_names=[handler],
                                     use_cow=handler != 'loop')
        except Exception as err:  # reported to the bench, which stops
            print('error: %s' % ' '.join(str(err).split()), flush=True)
            return 1
        print('ok %.6f' % result.attempts[-1].seconds, flush=True)
    return 0

