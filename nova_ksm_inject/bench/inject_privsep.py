"""Injection benchmark rows for an unprivileged caller, as nova-compute.

``--as-user USER`` adds the cases ``loop (privsep)`` and ``qsd (privsep)``:
a worker process runs as USER (``runuser``), like nova-compute as the
``nova`` user, and injects through the real ``[privsep_inject]`` daemon,
started once with ``sudo <this venv>/privsep-helper`` and kept warm as
inside nova-compute; the first injection (the daemon start) is not timed.
USER needs a sudoers rule for that privsep-helper (README, "Deployment"),
and the bench's work directory must be one only root can write (the
daemon refuses configuration anyone else could have written): it is
``--workdir``, by default under /var/lib.
"""

import os
import subprocess
import sys

from nova_ksm_inject.disk import api

DEFAULT_WORKDIR = '/var/lib/nova-ksm-inject-bench'


def write_conf(workdir):
    """A root-owned nova.conf for the worker and its privsep daemon."""
    conf = os.path.join(workdir, 'nova-privsep.conf')
    helper = 'sudo %s/privsep-helper --config-file %s' % (
        os.path.dirname(sys.executable), conf)
    with open(conf, 'w') as f:
        f.write('[DEFAULT]\ninstances_path = %s\n[inject]\n'
                'trusted_backing_dirs = %s\nstate_dir = %s\n'
                '[privsep_inject]\nhelper_command = %s\n'
                % (workdir, workdir, os.path.join(workdir, 'state-privsep'),
                   helper))
    os.chmod(conf, 0o644)
    return conf


class Worker:
    """The unprivileged injecting process; one per handler."""

    def __init__(self, user, conf, handler, fmt):
        self.proc = subprocess.Popen(
            ['runuser', '-u', user, '--', 'env', '-i',
             'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/nonexistent',
             sys.executable, '-m', __name__, '--worker', conf, handler,
             fmt], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd='/')
        self.warm = False

    def inject(self, image):
        self.proc.stdin.write(image + '\n')
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != 'ok':
            sys.exit('bench: the unprivileged worker failed on %s: %s'
                     % (image, answer or 'it exited (see above)'))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cases(case_class, user, workdir, loop_copy, overlay, workers):
    """``loop (privsep)`` and ``qsd (privsep)``, as ``case_class``
    instances (``bench.inject.Case``)."""
    conf = write_conf(workdir)
    found = {}
    for handler, fmt, kind, make in (('loop', 'raw', 'raw', loop_copy),
                                     ('qsd', 'qcow2', 'qcow2 overlay',
                                      overlay)):
        worker = Worker(user, conf, handler, fmt)
        workers.append(worker)

        def prepare(make=make, worker=worker):
            if not worker.warm:  # the daemon's start is not timed
                worker.inject(make())
                worker.warm = True
            return make()
        name = '%s (privsep)' % handler
        found[name] = case_class(name, kind, prepare, worker.inject, fmt)
    return found


def worker_main(conf, handler, fmt):
    """Inject each image path read from stdin; answer ``ok`` or an error."""
    from nova_ksm_inject.bench import inject as bench
    from nova_ksm_inject.cmd import common

    common.load_config([conf], quiet=True)
    common.init_privsep()
    for line in sys.stdin:
        try:
            api.inject_data(line.strip(), bench.request(), fmt=fmt,
                            partition=0, handler_names=[handler],
                            use_cow=handler != 'loop')
        except Exception as err:  # reported to the bench, which stops
            print('error: %s' % ' '.join(str(err).split()), flush=True)
            return 1
        print('ok', flush=True)
    return 0


if __name__ == '__main__' and sys.argv[1:2] == ['--worker']:
    sys.exit(worker_main(*sys.argv[2:5]))
