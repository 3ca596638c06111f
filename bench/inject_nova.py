"""Injection benchmark rows for modern nova's own path (``nova``).

nova 34's ``nova.virt.disk.api.inject_data`` (libguestfs: an appliance is
launched per image) on the same image and items as the other rows. It
runs in a worker process that imports nova only (nova and this package
each register options nova defines; in one process they would clash),
started once; each line on its stdin is an image path, and it answers
with the seconds ``inject_data`` took, as the other rows are timed.
"""

import os
import subprocess
import sys
import time


def available(python):
    """True when ``python`` can import nova."""
    return subprocess.run([python, '-c', 'import nova.virt.disk.api'],
                          capture_output=True).returncode == 0


class Worker:
    """The nova process; :meth:`inject` returns nova's seconds."""

    def __init__(self, python, backend, settings):
        env = dict(os.environ, LIBGUESTFS_BACKEND=backend,
                   LIBGUESTFS_BACKEND_SETTINGS=':'.join(settings))
        self.proc = subprocess.Popen(
            [python, '-m', __name__, '--worker'], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env)

    def inject(self, image):
        self.proc.stdin.write(image + '\n')
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        try:
            return float(answer)
        except ValueError:
            sys.exit('bench: nova failed on %s: %s' % (image, answer or
                                                       'it exited'))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _serve():
    import nova.conf
    from nova.virt.disk import api as disk_api
    from nova.virt.image import model as imgmodel

    from bench import inject as bench

    nova.conf.CONF([], project='nova', default_config_files=[])
    files = [('/etc/motd', bench.MOTD.decode())]
    for line in sys.stdin:
        image = imgmodel.LocalFileImage(line.strip(), imgmodel.FORMAT_QCOW2)
        started = time.perf_counter()
        try:
            disk_api.inject_data(image, key=bench.KEY, net=bench.NET,
                                 metadata=bench.METADATA,
                                 admin_password=bench.PASSWORD, files=files,
                                 partition=None, mandatory=('files',))
        except Exception as err:  # reported to the benchmark, one line
            print('%s: %s' % (type(err).__name__, err), flush=True)
            continue
        print('%.6f' % (time.perf_counter() - started), flush=True)


if __name__ == '__main__' and sys.argv[1:] == ['--worker']:
    _serve()
