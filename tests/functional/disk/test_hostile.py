"""Hostile images and guest paths: nothing is written outside the guest root.

The images carry symlinks that point at a directory of the *host*
(``outside``), absolutely and relatively (CVE-2012-3360/3361 style), and the
requests use ``..`` paths. After each injection the ``outside`` tree must be
byte-for-byte unchanged, whatever the code decided (write inside the guest
root or refuse).
"""

import os

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from tests.fs_snapshot import snapshot
from tests.functional.conftest import build_tree
from tests.functional.conftest import Debugfs

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileTest hostile@ci'


@pytest.fixture
def outside(tmp_path):
    """A host directory the hostile image aims at."""
    path = tmp_path / 'outside'
    (path / '.ssh').mkdir(parents=True)
    (path / '.ssh' / 'authorized_keys').write_text('host key\n')
    (path / 'shadow').write_text('root:HOSTHASH:1:0:99999:7:::\n')
    (path / 'motd').write_text('host motd\n')
    (path / 'etc').mkdir()
    return str(path)


def hostile_image(images, outside, links):
    tree = build_tree(os.path.join(images.base, 'hostile-tree'))
    for rel, target in links.items():
        path = os.path.join(tree, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            os.rename(path, path + '.orig')
        elif os.path.lexists(path):
            os.unlink(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    return images.raw_fs('hostile.raw', tree=tree)


def inject_and_check(image, outside, request):
    before = snapshot(outside)
    try:
        api.inject_data(image, request, partition=0, handler_names=['loop'],
                        use_cow=False)
        outcome = 'written'
    except exception.GuestPathRefused as err:
        outcome = 'refused: %s' % err
    assert snapshot(outside) == before, 'host files outside the guest changed'
    return outcome


def test_absolute_symlink_root_dir(images, outside, no_leaks):
    image = hostile_image(images, outside, {'root': outside})
    outcome = inject_and_check(image, outside,
                               inject.InjectionRequest(key=KEY))
    if outcome == 'written':
        # the key went to <guest>/<outside>/.ssh, inside the guest
        reader = Debugfs(image)
        assert KEY in reader.cat(outside + '/.ssh/authorized_keys')


def test_relative_symlink_escape(images, outside, no_leaks):
    rel = '../' * 12 + outside.lstrip('/') + '/motd'
    image = hostile_image(images, outside, {'etc/motd': rel})
    inject_and_check(image, outside, inject.InjectionRequest(
        files=[('/etc/motd', b'pwned\n')]))


def test_shadow_symlinked_to_host(images, outside, no_leaks):
    image = hostile_image(images, outside,
                          {'etc/shadow': outside + '/shadow'})
    before = snapshot(outside)
    with pytest.raises((exception.GuestPathRefused, exception.NoShadowEntry,
                        exception.InjectionFailed)):
        api.inject_data(image, inject.InjectionRequest(admin_password='pw'),
                        partition=0, handler_names=['loop'], use_cow=False)
    assert snapshot(outside) == before


def test_dotdot_guest_paths(images, outside, no_leaks):
    image = images.raw_fs()
    escape = '/' + '../' * 12 + outside.lstrip('/') + '/pwned'
    outcome = inject_and_check(image, outside, inject.InjectionRequest(
        files=[(escape, b'pwned\n')]))
    assert not os.path.exists(os.path.join(outside, 'pwned'))
    if outcome == 'written':
        assert Debugfs(image).cat(outside + '/pwned') == 'pwned\n'


def test_symlinked_ssh_dir_chain(images, outside, no_leaks):
    """/root/.ssh -> ../../<outside>/.ssh (relative, through a dir)."""
    rel = '../' * 8 + outside.lstrip('/') + '/.ssh'
    image = hostile_image(images, outside, {'root/.ssh': rel})
    inject_and_check(image, outside, inject.InjectionRequest(key=KEY))
