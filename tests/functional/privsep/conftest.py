"""Running the product as deployed: an unprivileged user whose only
privilege is starting ``nova-ksm-inject-privsep-helper``.

``deployed`` (once per session) installs this checkout into a venv of
Debian's Python under /var/lib (not an editable install: the code is
copied, as a package install would), makes sure the user ``nova-ksm-test``
exists, and writes a sudoers rule letting it run that venv's
``nova-ksm-inject-privsep-helper`` (with any arguments: the helper refuses
all but two itself) and, for the rootwrap test, ``oslo-rootwrap`` with a
rootwrap.conf under /etc holding our shipped filters, whose exec_dirs
hold our helper only (oslo.rootwrap always admits ``privsep-helper``),
and nothing else. The rule is removed at the end.

The helper reads root's fixed list of configuration files
(:data:`HELPER_SETTINGS`); ``Site.write_conf`` points it at the nova.conf
it writes, and the list is removed at the end.

``site`` gives each test a root-owned directory (the daemon refuses
configuration a user could write) with ``nova.conf``, ``instances/``
(nova's ``instances_path``, where the user may have images injected) and a
state directory, and checks afterwards that nothing leaked.
"""

import grp
import os
import pwd
import shutil
import subprocess
import uuid

import pytest

from tests.functional import conftest as base

USER = 'nova-ksm-test'
VAR = '/var/lib/nova-ksm-inject-tests'
ETC = '/etc/nova-ksm-inject-tests'
VENV = os.path.join(VAR, 'venv')
PYTHON = '/usr/bin/python3.11'
SUDOERS = '/etc/sudoers.d/nova-ksm-inject-tests'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
ROOTWRAP_CONF = os.path.join(ETC, 'rootwrap.conf')
#: rootwrap's exec_dirs: a link to the venv's helper and nothing else.
ROOTWRAP_BIN = os.path.join(ETC, 'rootwrap-bin')
HELPER = 'nova-ksm-inject-privsep-helper'
#: The helper's fixed list of configuration files
#: (nova_ksm_inject.cmd.privsep_helper.SETTINGS).
HELPER_SETTINGS = '/etc/nova-ksm-inject/privsep-helper.conf'


def _run(*cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, '%s failed: %s%s' % (
        ' '.join(cmd), proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


def _build_venv():
    if not os.path.exists(os.path.join(VENV, 'bin', 'python')):
        _run(PYTHON, '-m', 'venv', VENV)
        _run(os.path.join(VENV, 'bin', 'pip'), 'install', '-q', '-r',
             os.path.join(ROOT, 'requirements.txt'), 'oslo.rootwrap', 'wheel')
    # The code as a package install would lay it out: copied, root's.
    _run(os.path.join(VENV, 'bin', 'pip'), 'install', '-q', '--no-deps',
         '--force-reinstall', '--no-build-isolation', ROOT)
    site = _run(os.path.join(VENV, 'bin', 'python'), '-c',
                'import sysconfig; print(sysconfig.get_path("purelib"))')
    _run(os.path.join(ROOT, 'tools', 'link-guestfs'), site.strip())


def ensure_user(name):
    """A system user ``name`` in a group of its own name: the group is
    reused when an earlier user left it (``useradd -U`` refuses then)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        try:
            grp.getgrnam(name)
            group = ['-g', name]
        except KeyError:
            group = ['-U']
        _run('useradd', '--system', '--no-create-home', '--shell',
             '/usr/sbin/nologin', *group, name)


def _write_rootwrap_conf():
    os.makedirs(ROOTWRAP_BIN, mode=0o755, exist_ok=True)
    link = os.path.join(ROOTWRAP_BIN, HELPER)
    if not os.path.islink(link):
        os.symlink(os.path.join(VENV, 'bin', HELPER), link)
    with open(ROOTWRAP_CONF, 'w') as f:
        f.write('[DEFAULT]\nfilters_path=%s\nexec_dirs=%s\n'
                'use_syslog=False\n'
                % (os.path.join(ROOT, 'etc', 'nova', 'rootwrap.d'),
                   ROOTWRAP_BIN))
    os.chmod(ROOTWRAP_CONF, 0o644)


def write_helper_settings(*config_files):
    """Root's list of the files the helper's daemons read."""
    os.makedirs(os.path.dirname(HELPER_SETTINGS), mode=0o755, exist_ok=True)
    with open(HELPER_SETTINGS + '.new', 'w') as f:
        f.write('# nova-ksm-inject functional tests (removed afterwards)\n'
                '[privsep_helper]\nconfig_files = %s\n'
                % ', '.join(config_files))
    os.chmod(HELPER_SETTINGS + '.new', 0o644)
    os.rename(HELPER_SETTINGS + '.new', HELPER_SETTINGS)


@pytest.fixture(scope='session')
def deployed():
    """The venv, the user and its sudo rule; yields the venv's bin dir."""
    if shutil.which('sudo') is None:
        pytest.fail('sudo is not installed: tools/install-packages installs '
                    'it (bindep.txt); the unprivileged tests need it')
    for path in (VAR, ETC):
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, 0o755)
    _build_venv()
    ensure_user(USER)
    _write_rootwrap_conf()
    helper = os.path.join(VENV, 'bin', HELPER)
    rootwrap = os.path.join(VENV, 'bin', 'oslo-rootwrap')
    with open(SUDOERS, 'w') as f:
        f.write('# nova-ksm-inject functional tests (removed afterwards)\n'
                '%s ALL=(root) NOPASSWD: %s\n'
                '%s ALL=(root) NOPASSWD: %s %s *\n'
                % (USER, helper, USER, rootwrap, ROOTWRAP_CONF))
    os.chmod(SUDOERS, 0o440)
    try:
        yield os.path.join(VENV, 'bin')
    finally:
        os.unlink(SUDOERS)
        if os.path.exists(HELPER_SETTINGS):
            os.unlink(HELPER_SETTINGS)


class Site:
    """A root-owned test directory and the user's view of it."""

    def __init__(self, bin_dir, tmp_name):
        self.bin = bin_dir
        self.id = '%s-%s' % (tmp_name[:40], uuid.uuid4().hex[:6])
        self.dir = os.path.join(VAR, 'sites', self.id)
        self.instances = os.path.join(self.dir, 'instances')
        self.base = os.path.join(self.instances, '_base')
        self.state = os.path.join(self.dir, 'state')
        self.conf = os.path.join(self.dir, 'nova.conf')
        os.makedirs(self.base, mode=0o755)
        for path in (os.path.join(VAR, 'sites'), self.dir, self.instances,
                     self.base):
            os.chmod(path, 0o755)
        self.images = base.Images(self.instances)
        self.uid = pwd.getpwnam(USER).pw_uid

    def give(self, path):
        """Hand an image to the user, as nova's files are nova's."""
        os.chown(path, self.uid, -1)
        return path

    def write_conf(self, extra='', conf=None, helper=None):
        """nova.conf, the one the helper reads; privsep helpers through
        sudo, or ``helper``."""
        conf = conf or self.conf
        helper = helper or 'sudo %s/%s' % (self.bin, HELPER)
        write_helper_settings(conf)
        text = ('[DEFAULT]\ninstances_path = %s\nuse_cow_images = False\n'
                '[inject]\nstate_dir = %s\n[guestfs]\n'
                'backend_settings = force_tcg\n'
                '[privsep_inject]\nhelper_command = %s\n'
                '[privsep_ksm]\nhelper_command = %s\n%s'
                % (self.instances, self.state, helper, helper, extra))
        with open(conf, 'w') as f:
            f.write(text)
        os.chmod(conf, 0o644)
        return conf

    def write_user_file(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def run(self, *args, conf=None):
        """``nova-ksm-inject ARGS`` as the unprivileged user."""
        cmd = ['runuser', '-u', USER, '--', 'env', '-i',
               'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/nonexistent',
               os.path.join(self.bin, 'nova-ksm-inject'),
               '--config-file', conf or self.conf, *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd='/')

    def leftovers(self):
        found = {
            'loop devices': base.loop_devices(self.dir),
            'mounts': base.mounts(self.dir),
            'processes': [p for p in base.qemu_processes() if self.dir in p],
            'journal records': sorted(os.listdir(os.path.join(
                self.state, 'journal')))
            if os.path.isdir(os.path.join(self.state, 'journal')) else [],
            'work dirs': sorted(os.listdir(os.path.join(self.state, 'work')))
            if os.path.isdir(os.path.join(self.state, 'work')) else [],
        }
        return {k: v for k, v in found.items() if v}


@pytest.fixture
def site(deployed, request):
    site = Site(deployed, request.node.name)
    site.write_conf()
    yield site
    leaked = site.leftovers()
    shutil.rmtree(site.dir, ignore_errors=True)
    assert not leaked, 'leaked: %s' % leaked


def assert_one_line_error(proc, code, *words):
    """Exactly one error line, last; no traceback; each word in it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout,
                                     proc.stderr)
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines
              if line.startswith('nova-ksm-inject: error: ')]
    assert errors == lines[-1:], proc.stderr
    assert 'Traceback' not in proc.stderr + proc.stdout
    for word in words:
        assert word in errors[0], errors[0]



# KSM is global: the KSM test of this package takes the same lock and
# saves/restores every knob like the KSM tests do.
from tests.functional.ksm.conftest import ksm_saved  # noqa: E402,F401
