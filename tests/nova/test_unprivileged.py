"""The driver's injection from a nova-compute that is not root.

nova-compute runs as the ``nova`` user: ``spawn`` runs in a child process
as the user ``nova-ksm-test`` (``unprivileged_spawn.py``), and its
injection goes through a real privsep daemon (sudo privsep-helper, the
deployed venv and sudoers rule of the functional tests), not nova's
in-process PrivsepFixture. The disk is read back here, as root, with
debugfs.
"""

import os
import signal
import subprocess
import sys

from tests.functional.privsep.conftest import deployed  # noqa: F401
from tests.functional.privsep.conftest import Site
from tests.nova import base
from tests.nova import test_spawn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_spawn_injects_through_a_real_privsep_daemon(deployed):  # noqa
    site = Site(deployed, 'nova-spawn')
    site.write_conf(extra='[DEFAULT]\nimg_handlers = loop\n')
    for path in (site.instances, site.base):  # nova's, as on a compute node
        os.chown(path, site.uid, -1)
    env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'HOME': '/nonexistent',
           'PYTHONPATH': ROOT, 'PYTHONDONTWRITEBYTECODE': '1'}
    try:
        proc = subprocess.Popen(
            ['runuser', '-u', 'nova-ksm-test', '--', 'env', '-i',
             *['%s=%s' % item for item in env.items()], sys.executable,
             '-m', 'tests.nova.unprivileged_spawn', site.conf,
             site.instances, site.state, deployed],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        assert proc.returncode == 0, out + err
        disk = out.split('DISK ')[1].split()[0]
        keys = base.debugfs_cat(disk, '/root/.ssh/authorized_keys')
        assert test_spawn.KEY.encode() in keys
        assert base.debugfs_cat(disk, '/etc/motd') == test_spawn.MOTD
        shadow = base.debugfs_cat(disk, '/etc/shadow')
        hashed = shadow.split(b'\n')[0].split(b':')[1].decode()
        assert base.verify_sha512_crypt(test_spawn.PASSWORD, hashed)
        # The daemon ran as root and the disk is still the user's.
        assert os.stat(disk).st_uid == site.uid
        assert site.leftovers() == {}
    finally:
        subprocess.run(['rm', '-rf', site.dir])
