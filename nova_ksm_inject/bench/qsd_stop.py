"""How fast can qemu-storage-daemon be stopped? (root)

Starts the daemon as the ``qsd`` handler does (a qcow2 overlay on a raw
base, FUSE export, loop-mounted and written once, unmounted and detached),
then stops it one way per round and times until the image is free:

* ``naive``: SIGTERM, then wait until ``/proc/PID`` disappears. That also
  waits for init to reap the orphaned daemon, which on hosts whose PID 1
  reaps lazily (this CI's) is 1.2-2 s after the daemon has exited.
* ``sigterm``: SIGTERM, then wait until the process exits (zombie or gone).
* ``qmp``: QMP ``quit``, wait for the monitor to close (qemu closes it after
  its last image), then the same exit check: what the handler does.
* ``qmp-export-del``: QMP ``block-export-del`` + ``BLOCK_EXPORT_DELETED``
  first, then as ``qmp``.

After each stop the overlay must be unlocked (``qemu-img info`` takes
qemu's image lock) and the export unmounted.

    python -m nova_ksm_inject.bench.qsd_stop [--rounds 10]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import qmp
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import qsd


def sh(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def start(info, mnt):
    workdir = tempfile.mkdtemp(prefix=qsd.WORKDIR_PREFIX)
    cmd, export = qsd.daemon_command(info, workdir)
    open(export, 'x').close()
    sh(*cmd)
    pid = qsd.read_pid(os.path.join(workdir, 'qsd.pid'))
    device = sh('losetup', '--find', '--show', export).strip()
    sh('mount', device, mnt)
    with open(os.path.join(mnt, 'written'), 'w') as f:
        f.write('x')
    sh('umount', mnt)
    sh('losetup', '--detach', device)
    return workdir, export, pid


def naive(workdir, export, pid):
    os.kill(pid, signal.SIGTERM)
    while os.path.exists('/proc/%d' % pid):
        time.sleep(0.002)


def sigterm(workdir, export, pid):
    state.stop_process(pid, export, timeout=10)


def qmp_quit(workdir, export, pid):
    qsd.stop_daemon(pid, export, os.path.join(workdir, 'qmp.sock'), export)


def qmp_export_del(workdir, export, pid):
    with qmp.QmpClient(os.path.join(workdir, 'qmp.sock')) as client:
        client.execute('block-export-del', id=qsd.EXPORT_ID)
        client.wait_event('BLOCK_EXPORT_DELETED')
        client.quit()
    state.stop_process(pid, export, timeout=10)


METHODS = {'naive': naive, 'sigterm': sigterm, 'qmp': qmp_quit,
           'qmp-export-del': qmp_export_del}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--methods', default=','.join(METHODS))
    args = parser.parse_args(argv)
    CONF([], project='nova', default_config_files=[], default_config_dirs=[])
    tmp = tempfile.mkdtemp(prefix='nova-ksm-inject-bench-')
    try:
        base, overlay = os.path.join(tmp, 'base.raw'), os.path.join(
            tmp, 'overlay.qcow2')
        mnt = os.path.join(tmp, 'mnt')
        os.mkdir(mnt)
        sh('mkfs.ext4', '-q', '-F', base, '64M')
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw',
           overlay)
        info = disk_image.inspect_image(overlay, trusted_dirs=[tmp])
        for name in args.methods.split(','):
            times = []
            for _ in range(args.rounds):
                workdir, export, pid = start(info, mnt)
                started = time.monotonic()
                METHODS[name](workdir, export, pid)
                times.append(time.monotonic() - started)
                if os.path.ismount(export):
                    sys.exit('%s left the FUSE export mounted' % name)
                sh('qemu-img', 'info', '-f', 'qcow2', overlay)  # unlocked?
                shutil.rmtree(workdir)
            print('%-15s median %.4f s  min %.4f s  max %.4f s  (%d rounds)'
                  % (name, statistics.median(times), min(times), max(times),
                     args.rounds), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
