"""Hostile guest images, shared by the host and the appliance tests.

Each scenario is an ext4 image built without mounting (``mkfs.ext4 -d``)
holding a trap aimed at the files injection rewrites: a symlinked
``/root/.ssh`` or key file, symlinks to ``/etc/shadow``, hard links to
``/etc/passwd`` and ``/etc/shadow``, ``..`` paths. Every item of its
request is best-effort, so each one is tried and reported. Images are read
before and after with debugfs, which shares no code with what is tested:
the ``protected`` guest paths must keep type, mode, owner and content (for
a directory: its names), and what was meant to be written must be there.

``@`` in a link target stands for the guest's ``/`` as the run names it.
The appliance run uses ``/`` itself (``/root/.ssh -> /etc``): nothing
there can reach the host. The host run passes a ``decoy``: the image holds
a copy of ``/etc`` under that absolute path, and so does the host. A
regression that resolved an absolute link on the host would then change
the host's decoy, which the test sees, instead of the machine's /etc.

:class:`HostileChecks` holds the tests; a test module subclasses it and
gives a module-scoped ``injected`` fixture (:func:`run_all`).
"""

import dataclasses
import os
import re

import pytest

from nova_ksm_inject.disk import inject
from tests.functional.conftest import build_tree
from tests.functional.conftest import Debugfs
from tests.functional.conftest import PASSWD
from tests.functional.conftest import sh

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileFilesTest hostile@ci'
COMMON = ('/', '/etc', '/etc/passwd', '/etc/shadow', '/root')
SYMLINK = 'symbolic link'
WRITTEN, FAILED = inject.WRITTEN, inject.FAILED


@dataclasses.dataclass
class Scenario:
    """A trap, what is asked for, and what must come out unchanged.

    :ivar trap: guest path -> ``('link', target)``, ``('hard', existing)``,
        ``('dir', mode)`` or ``('file', text)``, applied in order.
    :ivar expected: item -> (status, words its reason must hold).
    """

    name: str
    trap: dict
    request: inject.InjectionRequest
    expected: dict
    changes: tuple = ()

    def protected(self, decoy=''):
        """Guest paths that must not change (``decoy`` as in build)."""
        paths = list(COMMON) + [p for p, (kind, _) in self.trap.items()
                                if kind != 'dir']
        if decoy:
            paths += [decoy + p for p in COMMON[1:4]]
        return [p for p in dict.fromkeys(paths) if p not in self.changes]


def _request(**items):
    return inject.InjectionRequest(mandatory=(), **items)


def _key_failed(words):
    return {'key': (FAILED, words)}


SCENARIOS = [
    Scenario('ssh-dir-absolute-link', {'/root/.ssh': ('link', '@/etc')},
             _request(key=KEY),
             _key_failed('/root/.ssh is a %s to @/etc;' % SYMLINK)),
    Scenario('ssh-dir-relative-link', {'/root/.ssh': ('link', '../etc')},
             _request(key=KEY),
             _key_failed('/root/.ssh is a %s to ../etc;' % SYMLINK)),
    Scenario('key-file-link', {
        '/root/.ssh': ('dir', 0o755),
        '/root/.ssh/authorized_keys': ('link', '@/etc/passwd')},
        _request(key=KEY), _key_failed(SYMLINK + ' to @/etc/passwd;')),
    Scenario('key-file-hard-link', {
        '/root/.ssh': ('dir', 0o755),
        '/root/.ssh/authorized_keys': ('hard', '/etc/passwd')},
        _request(key=KEY), {'key': (WRITTEN, '')},
        changes=('/root/.ssh/authorized_keys',)),
    Scenario('shadow-hard-link', {'/etc/shadow-': ('hard', '/etc/shadow')},
             _request(admin_password='hostile pw'),
             {'admin_password': (WRITTEN, '')}, changes=('/etc/shadow',)),
    Scenario('file-hard-link', {
        '/etc/motd': ('file', 'welcome\n'),
        '/etc/issue': ('hard', '/etc/motd')},
        _request(files=[('/etc/motd', b'injected motd\n')]),
        {'file /etc/motd': (WRITTEN, '')}, changes=('/etc/motd',)),
    Scenario('links-to-shadow', {
        '/etc/network': ('dir', 0o755),
        '/etc/network/interfaces': ('link', '@/etc/shadow'),
        '/meta.js': ('link', '@/etc/shadow'),
        '/opt': ('dir', 0o755),
        '/opt/app.conf': ('link', '../../../etc/shadow')},
        _request(net='auto eth0\n', metadata={'a': 'b'},
                 files=[('/opt/app.conf', b'x\n')]),
        {'net': (FAILED, SYMLINK + ' to @/etc/shadow;'),
         'metadata': (FAILED, SYMLINK + ' to @/etc/shadow;'),
         'file /opt/app.conf': (FAILED,
                                SYMLINK + ' to ../../../etc/shadow;')}),
    Scenario('dotdot', {
        '/opt': ('dir', 0o755), '/srv': ('dir', 0o755),
        '/srv/up': ('link', '../../../../../..')},
        _request(files=[('/../../../opt/dotdot', b'a\n'),
                        ('/opt/../../../../../srv/dotdot', b'b\n'),
                        ('/srv/up/../../opt/via-up', b'c\n')]),
        {'file /../../../opt/dotdot': (WRITTEN, ''),
         'file /opt/../../../../../srv/dotdot': (WRITTEN, ''),
         'file /srv/up/../../opt/via-up': (WRITTEN, '')}),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def build(base, scenario, decoy=''):
    """The scenario's raw ext4 image (32 MiB) under ``base``; with a
    ``decoy``, ``@`` targets name the copy of the guest tree there."""
    tree = build_tree(os.path.join(base, scenario.name + '-tree'))
    copies = [build_tree(os.path.join(tree, decoy.lstrip('/')))] if decoy \
        else []
    for top in [tree] + copies:
        os.chown(os.path.join(top, 'etc/shadow'), 0, 42)
    for path, (kind, arg) in scenario.trap.items():
        full = os.path.join(tree, path.lstrip('/'))
        if kind == 'dir':
            os.makedirs(full)
            os.chmod(full, arg)
            os.chown(full, 1000, 1000)
        elif kind == 'file':
            with open(full, 'w') as f:
                f.write(arg)
        elif kind == 'link':
            os.symlink(arg.replace('@', decoy), full)
        else:
            os.link(os.path.join(tree, arg.lstrip('/')), full)
    image = os.path.join(base, scenario.name + '.raw')
    sh('mkfs.ext4', '-q', '-F', '-d', tree, image, '32M')
    return image


def entry(reader, path):
    """``(type, mode, uid, gid, links, content)`` of a guest path, not
    followed; content is the text, the names, or the link target."""
    out = reader.run('stat %s' % path)
    kind = re.search(r'Type: (\w+)', out).group(1)
    mode = int(re.search(r'Mode:\s+(\d+)', out).group(1), 8)
    uid, gid = map(int, re.search(r'User:\s+(\d+)\s+Group:\s+(\d+)',
                                  out).groups())
    links = int(re.search(r'Links: (\d+)', out).group(1))
    if kind == 'regular':
        content = reader.cat(path)
    elif kind == 'directory':
        content = sorted(line.split('/')[5] for line in
                         reader.run('ls -p %s' % path).splitlines() if line)
    else:
        content = re.search(r'Fast link dest: "(.*)"', out).group(1)
    return kind, mode, uid, gid, links, content


def states(image, paths):
    """:func:`entry` of each path, links left out (replacing a hard-linked
    file rightly changes the other name's count)."""
    reader = Debugfs(image)
    found = {p: entry(reader, p) for p in paths}
    return {p: state[:4] + state[5:] for p, state in found.items()}


@dataclasses.dataclass
class Outcome:
    image: str
    before: dict
    decoy: str = ''
    items: list = None
    error: Exception = None


def run_all(base, inject_one, images=None, decoy=''):
    """Build every scenario under ``base`` (unless ``images`` maps names to
    images built already) and inject it with ``inject_one(scenario,
    image)``, which returns the item results."""
    outcomes = {}
    for scenario in SCENARIOS:
        image = (images or {}).get(scenario.name) or build(base, scenario,
                                                           decoy)
        before = states(image, scenario.protected(decoy))
        outcomes[scenario.name] = Outcome(image, before, decoy)
    for scenario in SCENARIOS:
        outcome = outcomes[scenario.name]
        try:
            outcome.items = inject_one(scenario, outcome.image)
        except Exception as err:  # reported by every test of the scenario
            outcome.error = err
    return outcomes


class HostileChecks:
    """The tests; ``injected`` maps a scenario name to its Outcome."""

    @staticmethod
    def outcome(injected, name):
        outcome = injected[name]
        if outcome.error is not None:
            raise AssertionError('injection failed: %r' % outcome.error)
        return outcome

    @pytest.mark.parametrize('name', sorted(BY_NAME))
    def test_nothing_outside_the_intended_files_changed(self, injected,
                                                        name):
        outcome = self.outcome(injected, name)
        after = states(outcome.image, BY_NAME[name].protected(outcome.decoy))
        assert after == outcome.before

    @pytest.mark.parametrize('name', sorted(BY_NAME))
    def test_each_item_written_or_refused_with_the_reason(self, injected,
                                                          name):
        outcome = self.outcome(injected, name)
        got = {i.item: (i.status, i.reason or '') for i in outcome.items}
        expected = BY_NAME[name].expected
        assert sorted(got) == sorted(expected)
        for item, (status, words) in expected.items():
            assert got[item][0] == status, got[item]
            assert words.replace('@', outcome.decoy) in got[item][1], \
                got[item]

    def test_symlinked_ssh_dir_keeps_etc_as_it_was(self, injected):
        for name in ('ssh-dir-absolute-link', 'ssh-dir-relative-link'):
            outcome = self.outcome(injected, name)
            etc = (outcome.decoy if 'absolute' in name else '') + '/etc'
            reader = Debugfs(outcome.image)
            assert entry(reader, etc)[:4] == ('directory', 0o755, 0, 0)
            assert not reader.exists(etc + '/authorized_keys')

    def test_hard_linked_key_file_is_replaced(self, injected):
        reader = Debugfs(self.outcome(injected, 'key-file-hard-link').image)
        keys = entry(reader, '/root/.ssh/authorized_keys')
        assert keys[:5] == ('regular', 0o600, 0, 0, 1)
        assert keys[5] == PASSWD + inject.KEY_COMMENT.decode() + KEY + '\n'
        assert entry(reader, '/etc/passwd')[:6] == (
            'regular', 0o644, 0, 0, 1, PASSWD)
        assert entry(reader, '/root/.ssh')[:4] == ('directory', 0o700, 0, 0)

    def test_hard_linked_shadow_backup_keeps_the_old_hash(self, injected):
        reader = Debugfs(self.outcome(injected, 'shadow-hard-link').image)
        shadow, backup = (entry(reader, p) for p in ('/etc/shadow',
                                                     '/etc/shadow-'))
        assert shadow[:5] == backup[:5] == ('regular', 0o640, 0, 42, 1)
        assert backup[5].startswith('root:*:')
        assert shadow[5].startswith('root:$6$')

    def test_hard_linked_file_keeps_its_other_name(self, injected):
        reader = Debugfs(self.outcome(injected, 'file-hard-link').image)
        assert reader.cat('/etc/motd') == 'injected motd\n'
        assert entry(reader, '/etc/issue')[4:] == (1, 'welcome\n')

    def test_dotdot_paths_land_inside_the_guest(self, injected):
        reader = Debugfs(self.outcome(injected, 'dotdot').image)
        assert reader.cat('/opt/dotdot') == 'a\n'
        assert reader.cat('/srv/dotdot') == 'b\n'
        assert reader.cat('/opt/via-up') == 'c\n'
