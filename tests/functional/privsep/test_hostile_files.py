"""Hostile images injected by the unprivileged user through the privsep
daemon: the descriptor-level mode, owner and hard-link rules hold with the
daemon's reduced capabilities, and a refusal is one line."""

import os

import pytest

from nova_ksm_inject.disk import inject
from tests.functional.conftest import Debugfs
from tests.functional.conftest import SHADOW
from tests.functional.disk.files import hostile
from tests.functional.privsep.conftest import assert_one_line_error


@pytest.fixture
def key(site):
    return site.write_user_file('key.pub', hostile.KEY + '\n')


def _image(site, trap, changes=()):
    scenario = hostile.Scenario('privsep', trap, inject.InjectionRequest(),
                                {}, changes)
    directory = os.path.join(site.instances, 'vm')
    os.makedirs(directory)
    image = site.give(hostile.build(directory, scenario))
    return image, hostile.states(image, scenario.protected())


def test_key_file_hard_linked_to_shadow(site, key):
    """Reading root's 0640 shadow, writing a new file and giving it to
    root needs the daemon's DAC_OVERRIDE and CHOWN; shadow keeps its
    content, mode and owner."""
    image, before = _image(site, {
        '/root/.ssh': ('dir', 0o755),
        '/root/.ssh/authorized_keys': ('hard', '/etc/shadow')},
        changes=('/root/.ssh/authorized_keys',))
    proc = site.run('inject', image, '--format', 'raw', '--handlers', 'loop',
                    '--no-cow', '--key-file', key)
    assert proc.returncode == 0, proc.stderr
    reader = Debugfs(image)
    assert hostile.entry(reader, '/root/.ssh/authorized_keys') == (
        'regular', 0o600, 0, 0, 1,
        SHADOW + inject.KEY_COMMENT.decode() + hostile.KEY + '\n')
    assert hostile.entry(reader, '/root/.ssh')[:4] == (
        'directory', 0o700, 0, 0)
    assert hostile.states(image, list(before)) == before


def test_symlinked_ssh_dir_is_refused_in_one_line(site, key):
    # Relative: a regression must not reach the machine's own /etc.
    image, before = _image(site, {'/root/.ssh': ('link', '../etc')})
    proc = site.run('inject', image, '--format', 'raw', '--handlers', 'loop',
                    '--no-cow', '--key-file', key)
    assert_one_line_error(proc, 1, '/root/.ssh is a symbolic link to ../etc')
    assert hostile.states(image, list(before)) == before
