"""``tools/demo`` and ``tools/run-tests`` work as the README prints them:
as root they run (no sudo, which a fresh Debian lacks); as anyone else
they re-run themselves through sudo, or say that they need root.

The scripts are copied into a temporary tree whose ``tools/install-
packages`` (the first thing they run as root) is a stub, and run with a
fake ``id`` and ``sudo`` on PATH: no root needed, nothing installed.
"""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPTS = ('demo', 'run-tests')

FAKE_ID = '''#!/bin/sh
[ "$1" = -u ] && echo "$FAKE_UID"
'''
# Records how it was called, then runs the command as "root" (once: a
# script that asks again as root would loop).
FAKE_SUDO = '''#!/bin/sh
echo "$*" >> "$SUDO_LOG"
[ -z "$IN_FAKE_SUDO" ] || exit 99
[ "$1" = -E ] && shift
IN_FAKE_SUDO=1 FAKE_UID=0 exec "$@"
'''
STUB_INSTALL = '''#!/bin/sh
echo "ran as uid $(id -u)" >> "$RAN_LOG"
exit 42
'''


def _executable(path, text):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, 0o755)


@pytest.fixture
def tree(tmp_path):
    """A copy of the scripts and a bin dir holding fakes and just the
    real tools the scripts need before they install anything."""
    tools = tmp_path / 'repo' / 'tools'
    tools.mkdir(parents=True)
    for name in SCRIPTS:
        shutil.copy(os.path.join(ROOT, 'tools', name), tools / name)
    _executable(tools / 'install-packages', STUB_INSTALL)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    _executable(bin_dir / 'id', FAKE_ID)
    for tool in ('dirname', 'sh'):
        os.symlink(shutil.which(tool), bin_dir / tool)
    return tmp_path


def run(tree, script, uid, sudo=True):
    if sudo:
        _executable(tree / 'bin' / 'sudo', FAKE_SUDO)
    env = {'PATH': str(tree / 'bin'), 'FAKE_UID': str(uid),
           'SUDO_LOG': str(tree / 'sudo.log'),
           'RAN_LOG': str(tree / 'ran.log')}
    proc = subprocess.run(['/bin/sh', 'tools/' + script, 'unit'],
                          cwd=tree / 'repo', env=env, capture_output=True,
                          text=True, timeout=60)
    logs = [(tree / name).read_text().splitlines()
            if (tree / name).exists() else []
            for name in ('sudo.log', 'ran.log')]
    return proc, logs[0], logs[1]


@pytest.mark.parametrize('script', SCRIPTS)
def test_root_runs_without_sudo(tree, script):
    proc, sudo_calls, ran = run(tree, script, uid=0)
    assert proc.returncode == 42, proc.stderr  # the stub's status
    assert sudo_calls == []
    assert ran == ['ran as uid 0']


@pytest.mark.parametrize('script', SCRIPTS)
def test_root_needs_no_sudo_installed(tree, script):
    proc, _, ran = run(tree, script, uid=0, sudo=False)
    assert proc.returncode == 42, proc.stderr
    assert ran == ['ran as uid 0']


@pytest.mark.parametrize('script', SCRIPTS)
def test_others_rerun_through_sudo_keeping_arguments(tree, script):
    proc, sudo_calls, ran = run(tree, script, uid=1000)
    assert proc.returncode == 42, proc.stderr
    assert sudo_calls == ['-E tools/%s unit' % script]
    assert ran == ['ran as uid 0']


@pytest.mark.parametrize('script', SCRIPTS)
def test_others_without_sudo_are_told_why(tree, script):
    proc, _, ran = run(tree, script, uid=1000, sudo=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        'tools/%s: needs root: run it as root, or install sudo' % script)
    assert ran == []
