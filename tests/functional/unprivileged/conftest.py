"""The default injection path as deployed: a user with no sudo rule.

``NOSUDO`` is a user made for these tests that never gets any sudo rule
or group (the privsep tests' user may hold one during the session, so it
is not used here). ``venv`` installs this checkout into the shared test
venv of Debian's Python (not editable: copied, as a package install).
``home`` gives each test a directory the user owns, as nova owns
``instances_path``, with a ``nova.conf`` whose ``[inject]
user_state_dir`` lies inside it, and checks afterwards that nothing of the
user's leaked: mounts, helper processes, journal records, work dirs.
"""

import os
import pwd
import shutil
import subprocess
import uuid

import pytest

from tests.functional import conftest as base
from tests.functional.privsep import conftest as privsep

NOSUDO = 'nova-ksm-nosudo'
HOMES = os.path.join(privsep.VAR, 'nosudo')


@pytest.fixture(scope='session')
def venv():
    os.makedirs(privsep.VAR, mode=0o755, exist_ok=True)
    os.chmod(privsep.VAR, 0o755)
    privsep._build_venv()
    privsep.ensure_user(NOSUDO)
    out = subprocess.run(['sudo', '-n', '-l', '-U', NOSUDO],
                         capture_output=True, text=True)
    assert 'may run' not in out.stdout, 'the test user has sudo rules'
    return os.path.join(privsep.VENV, 'bin')


class Home:
    """A directory of the user's, its nova.conf and how to run as it."""

    def __init__(self, bin_dir, name):
        self.bin = bin_dir
        self.user = pwd.getpwnam(NOSUDO)
        self.dir = os.path.join(HOMES, '%s-%s' % (name[:40],
                                                  uuid.uuid4().hex[:6]))
        self.state = os.path.join(self.dir, 'state')
        os.makedirs(self.dir, mode=0o755)
        os.chmod(HOMES, 0o755)
        self.give(self.dir)
        self.images = base.Images(self.dir)
        self.base = self.images.path('_base')
        os.makedirs(self.base)
        self.conf = os.path.join(self.dir, 'nova.conf')
        with open(self.conf, 'w') as f:
            f.write('[DEFAULT]\ninstances_path = %s\n[inject]\n'
                    'user_state_dir = %s\n' % (self.dir, self.state))

    def give(self, *paths):
        for path in paths:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return paths[0]

    def argv(self, *args):
        return ['runuser', '-u', NOSUDO, '--', 'env', '-i',
                'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/nonexistent',
                *args]

    def run(self, *args):
        """``nova-ksm-inject ARGS --config-file nova.conf`` as the user."""
        return subprocess.run(self.argv(
            os.path.join(self.bin, 'nova-ksm-inject'), '--config-file',
            self.conf, *args), capture_output=True, text=True, cwd='/')

    def leftovers(self):
        found = {
            'mounts': base.mounts(self.dir),
            'processes': [p for p in base.qemu_processes() + helpers()
                          if self.dir in p],
            'journal records': base.journal_leftovers(self.state),
        }
        return {k: v for k, v in found.items() if v}


def helpers():
    """Live sandboxes (bwrap) and FUSE servers, full command lines."""
    out = subprocess.run(['ps', '-eww', '-o', 'stat,args'],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:]
            if not line.startswith('Z') and
            any(w in line for w in ('bwrap', 'fuse2fs'))]


@pytest.fixture
def home(venv, request):
    home = Home(venv, request.node.name)
    yield home
    leaked = home.leftovers()
    shutil.rmtree(home.dir, ignore_errors=True)
    assert not leaked, 'leaked: %s' % leaked
