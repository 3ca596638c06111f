"""What the nova user can do with the one command it may run as
root, played for real as the unprivileged user through sudo.

(a) Arguments of its choosing: a logging configuration (oslo.log
evaluates its handler arguments as Python), a config file naming one, or
a log file root would create. Each attack writes a marker as root if it
works; the marker must not exist.

(b) The configuration swapped while injections run: a racing process
replaces the daemon's configuration file with a symlink to a file whose
``image_dirs`` is a root-only directory holding a root-only victim disk,
hundreds of times; the victim must be byte-for-byte unchanged.

The command attacked is the one the deployment hands out: the
``helper_command`` ``Site.write_conf`` writes (and the sudoers rule of
``deployed`` allows), plus the attacker's arguments. Against the code
before nova-ksm-inject-privsep-helper (aa05085: ``sudo privsep-helper
--config-file ...``, path checks at each call) every test here fails: the
marker is written, and the victim is written within the first tries.
"""

import configparser
import hashlib
import os
import shlex
import subprocess
import threading
import time

import pytest

from tests.functional.privsep import conftest as privsep_conftest

USER = privsep_conftest.USER
CONTEXT = 'nova_ksm_inject.privsep.inject_pctxt'
SOCK = '/tmp/tmpattack0/privsep.sock'
TRIES = 300
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackerKey attacker@ci'


def as_user(*cmd, timeout=120):
    return subprocess.run(
        ['runuser', '-u', USER, '--', 'env', '-i',
         'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/nonexistent', *cmd],
        capture_output=True, text=True, cwd='/', timeout=timeout)


def deployed_helper(site):
    """The helper command the deployment hands the user, as a list."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(site.conf)
    return shlex.split(parser.get('privsep_inject', 'helper_command'))


@pytest.fixture
def attacker(site):
    """A directory the user owns, and a marker path only root can create."""
    home = os.path.join(site.dir, 'attacker')
    os.mkdir(home, 0o755)
    os.chown(home, site.uid, -1)
    marker = os.path.join(site.dir, 'owned-by-root')
    yield home, marker
    if os.path.exists(marker):
        os.unlink(marker)


def user_file(home, name, text, uid):
    path = os.path.join(home, name)
    with open(path, 'w') as f:
        f.write(text)
    os.chown(path, uid, -1)
    return path


def evil_logging(home, marker, uid):
    """A logging config whose handler arguments create ``marker``."""
    return user_file(home, 'logging.conf', (
        '[loggers]\nkeys=root\n[handlers]\nkeys=evil\n[formatters]\nkeys=\n'
        '[logger_root]\nlevel=DEBUG\nhandlers=evil\n'
        '[handler_evil]\nclass=StreamHandler\nargs=(open(%r, "w"),)\n'
        % marker), uid)


def attacks(home, marker, uid):
    logging_conf = evil_logging(home, marker, uid)
    nova_conf = user_file(home, 'nova.conf', '[DEFAULT]\nlog_config_append'
                          ' = %s\n' % logging_conf, uid)
    return {
        'log-config-append': ['--log-config-append', logging_conf],
        'log-config': ['--log-config', logging_conf],
        'config-file': ['--config-file', nova_conf],
        'log-file': ['--log-file', marker],
    }


@pytest.mark.parametrize('name', ['log-config-append', 'log-config',
                                  'config-file', 'log-file'])
@pytest.mark.parametrize('where', ['before', 'after'])
def test_sudo_helper_with_attacker_arguments(site, attacker, name, where):
    home, marker = attacker
    extra = attacks(home, marker, site.uid)[name]
    ours = ['--privsep_context', CONTEXT, '--privsep_sock_path', SOCK]
    args = extra + ours if where == 'before' else ours + extra
    proc = as_user(*deployed_helper(site), *args)
    assert not os.path.exists(marker), 'root ran the attacker\'s %s' % name
    assert proc.returncode != 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'refused' in lines[0], proc.stderr


def test_rootwrap_with_attacker_arguments(site, attacker):
    """Through rootwrap, which always admits privsep-helper itself."""
    home, marker = attacker
    logging_conf = evil_logging(home, marker, site.uid)
    for helper in ('privsep-helper', 'nova-ksm-inject-privsep-helper'):
        proc = as_user('sudo', '-n', os.path.join(site.bin, 'oslo-rootwrap'),
                       privsep_conftest.ROOTWRAP_CONF, helper,
                       '--log-config-append', logging_conf,
                       '--privsep_context', CONTEXT, '--privsep_sock_path',
                       SOCK)
        assert not os.path.exists(marker), 'rootwrap ran %s for root' % helper
        assert proc.returncode != 0, proc.stderr


@pytest.fixture
def victim(site):
    """A root-only disk in a root-only directory, and a configuration
    that would name that directory as image_dirs."""
    vault = os.path.join(site.dir, 'vault')
    os.mkdir(vault, 0o700)
    image = os.path.join(vault, 'victim.raw')
    os.rename(site.images.raw_fs('victim.raw'), image)
    os.chmod(image, 0o600)
    return image


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class Swapper:
    """Replaces ``path`` by ``a`` and ``b`` in turn (rename, atomic) until
    stopped; ``a`` and ``b`` are made by ``make(tmp, which)``."""

    def __init__(self, path, make):
        self.path, self.make = path, make
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        which = 0
        while not self.stop.is_set():
            tmp = '%s.swap%d' % (self.path, which)
            self.make(tmp, which)
            os.rename(tmp, self.path)
            which = 1 - which
            time.sleep(0.0005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_config_swapped_for_a_symlink_while_injecting(site, attacker, victim):
    home, _marker = attacker
    with open(site.conf) as f:
        good = f.read()
    evil = user_file(home, 'evil.conf', good + '[inject]\nimage_dirs = %s\n'
                     % os.path.dirname(victim), site.uid)
    key = user_file(home, 'key.pub', KEY + '\n', site.uid)
    before = digest(victim)

    def make(tmp, which):
        if which:
            os.symlink(evil, tmp)
        else:
            with open(tmp, 'w') as f:
                f.write(good)
            os.chmod(tmp, 0o644)

    outcomes = []
    with Swapper(site.conf, make):
        for _try in range(TRIES):
            proc = site.run('inject', victim, '--format', 'raw',
                            '--handlers', 'loop', '--no-cow', '--key-file',
                            key)
            outcomes.append(proc.stderr.strip().splitlines()[-1:])
            if proc.returncode == 0 or digest(victim) != before:
                break
    with open(site.conf, 'w') as f:  # as it was, for the leak checks
        f.write(good)
    assert digest(victim) == before, 'root wrote the victim on try %d: %s' % (
        len(outcomes), outcomes[-1])
    reached = [o for o in outcomes if o and 'image_dirs' in o[0]]
    assert reached, 'no try reached the daemon: %s' % outcomes[:3]
