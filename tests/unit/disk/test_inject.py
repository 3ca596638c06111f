"""inject.py through HostRootFiles on a temporary guest tree.

The shadow hash is checked with ``openssl passwd -6``, a reader independent
of the libcrypt call under test. Guest owners are real as root and
recorded per inode otherwise (``owners`` in conftest.py), so every test
runs, and checks owners, without root.
"""

import json
import logging
import os
import subprocess

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import guestpath
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk import network
from nova_ksm_inject.disk import password

pytestmark = pytest.mark.usefixtures('owners')

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtestkeyblob user@example'
OTHER_KEY = b'ssh-rsa AAAAB3NzaOtherKey other@example'
PASSWORD = 'S3cret pa$$word'
SHADOW = (b'daemon:*:19000:0:99999:7:::\n'
          b'root:$6$old$oldhash:19000:0:99999:7:::\n'
          b'user:$6$u$userhash:19001:0:99999:7:::\n')


@pytest.fixture
def guest(tmp_path, owners):
    root = tmp_path / 'guest'
    (root / 'etc').mkdir(parents=True)
    (root / 'etc' / 'shadow').write_bytes(SHADOW)
    os.chmod(root / 'etc' / 'shadow', 0o640)
    owners.chown(root / 'etc' / 'shadow', 0, 42)
    (root / 'etc' / 'passwd').write_bytes(b'root:x:0:0:root:/root:/bin/sh\n')
    return root


@pytest.fixture
def files(guest):
    with guestpath.HostRootFiles(str(guest)) as opened:
        yield opened


def tree(root):
    """Every path under ``root`` with its content (None for directories)."""
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        found[dirpath] = None
        for name in names:
            with open(os.path.join(dirpath, name), 'rb') as handle:
                found[os.path.join(dirpath, name)] = handle.read()
    return found


@pytest.fixture
def mode_owner(owners):
    """``(permission bits, uid, gid)`` of a guest file."""
    return owners.of


def results(done):
    """``[(item, status)]`` of inject_data's per-item results."""
    return [(r.item, r.status) for r in done]


def test_key_twice_one_copy_with_modes(files, guest, mode_owner):
    for _ in range(2):
        inject.inject_data(files, inject.InjectionRequest(key=KEY))
    keys = (guest / 'root/.ssh/authorized_keys').read_bytes()
    assert keys == inject.KEY_COMMENT + KEY.encode() + b'\n'
    assert mode_owner(guest / 'root/.ssh') == (0o700, 0, 0)
    assert mode_owner(guest / 'root/.ssh/authorized_keys') == (0o600, 0, 0)


def test_existing_keys_kept_and_newline_added(files, guest, mode_owner):
    (guest / 'root/.ssh').mkdir(parents=True, mode=0o755)
    (guest / 'root/.ssh/authorized_keys').write_bytes(OTHER_KEY)  # no \n
    os.chmod(guest / 'root/.ssh/authorized_keys', 0o644)
    inject.inject_data(files, inject.InjectionRequest(key=KEY + '\n'))
    lines = (guest / 'root/.ssh/authorized_keys').read_bytes().split(b'\n')
    assert lines == [OTHER_KEY, inject.KEY_COMMENT.rstrip(b'\n'),
                     KEY.encode(), b'']
    assert mode_owner(guest / 'root/.ssh') == (0o700, 0, 0)
    assert mode_owner(guest / 'root/.ssh/authorized_keys') == (0o600, 0, 0)


def test_same_key_with_other_comment_not_added(files, guest):
    (guest / 'root/.ssh').mkdir(parents=True)
    blob_line = b'no-pty ' + KEY.rsplit(' ', 1)[0].encode() + b' laptop\n'
    (guest / 'root/.ssh/authorized_keys').write_bytes(blob_line)
    inject.inject_data(files, inject.InjectionRequest(key=KEY))
    assert (guest / 'root/.ssh/authorized_keys').read_bytes() == blob_line


def test_symlinked_key_file_changes_nothing(files, guest, mode_owner):
    (guest / 'root/.ssh').mkdir(parents=True, mode=0o755)
    # Relative: even a resolver that followed it on the host stays in tmp.
    os.symlink('../../etc/shadow', guest / 'root/.ssh/authorized_keys')
    before = tree(guest), mode_owner(guest / 'root/.ssh')
    with pytest.raises(exception.GuestPathRefused, match='symbolic link'):
        inject.inject_data(files, inject.InjectionRequest(key=KEY))
    assert (tree(guest), mode_owner(guest / 'root/.ssh')) == before
    assert mode_owner(guest / 'etc/shadow') == (0o640, 0, 42)


def test_multiline_key_refused(files, guest):
    before = tree(guest)
    with pytest.raises(exception.InjectionLimit, match='several lines'):
        inject.inject_data(files, inject.InjectionRequest(
            key=KEY + '\nssh-rsa AAAAinjected'))
    assert tree(guest) == before


def test_password_changes_only_root_hash(files, guest, mode_owner):
    inject.inject_data(files, inject.InjectionRequest(
        admin_password=PASSWORD))
    new = (guest / 'etc/shadow').read_bytes().split(b'\n')
    old = SHADOW.split(b'\n')
    assert new[0] == old[0] and new[2:] == old[2:]  # byte-identical
    fields = new[1].split(b':')
    assert fields[0] == b'root'
    assert fields[2:] == old[1].split(b':')[2:]  # last change etc. kept
    hashed = fields[1].decode()
    assert hashed.startswith('$6$')
    salt = hashed.split('$')[2]
    assert len(salt) == 16
    out = subprocess.run(['openssl', 'passwd', '-6', '-salt', salt,
                          PASSWORD], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == hashed
    assert mode_owner(guest / 'etc/shadow') == (0o640, 0, 42)


@pytest.mark.parametrize('shadow', [None, b'daemon:*:1:0:99999:7:::\n',
                                    b'rootless:x:1::::::\nroot\n'])
def test_no_shadow_entry_writes_nothing(files, guest, shadow):
    if shadow is None:
        os.unlink(guest / 'etc/shadow')
    else:
        (guest / 'etc/shadow').write_bytes(shadow)
    before = tree(guest)
    # The key comes first in the request but must not be written either.
    with pytest.raises(exception.NoShadowEntry):
        inject.inject_data(files, inject.InjectionRequest(
            key=KEY, admin_password=PASSWORD))
    assert tree(guest) == before


def test_broken_libcrypt_fails_cleanly(files, guest, monkeypatch):
    monkeypatch.setattr(password, '_crypt_r', lambda: lambda *a: b'*0')
    before = tree(guest)
    with pytest.raises(exception.InjectionFailed, match='SHA-512'):
        inject.inject_data(files, inject.InjectionRequest(
            admin_password=PASSWORD, net='auto lo\n'))
    assert tree(guest) == before


def test_metadata_json(files, guest, mode_owner):
    meta = {'role': 'lab', 'n': 3, 'tags': ['a', 'b']}
    done = inject.inject_data(files, inject.InjectionRequest(metadata=meta))
    assert results(done) == [('metadata', 'written')]
    assert json.loads((guest / 'meta.js').read_bytes()) == meta
    assert mode_owner(guest / 'meta.js') == (0o644, 0, 0)


def test_net_written_with_parents(files, guest, mode_owner):
    text = network.render_network([{'name': 'eth0', 'use_dhcp': True}])
    inject.inject_data(files, inject.InjectionRequest(net=text))
    assert (guest / 'etc/network/interfaces').read_text() == text
    assert mode_owner(guest / 'etc/network') == (0o755, 0, 0)
    assert mode_owner(guest / 'etc/network/interfaces') == (0o644, 0, 0)


def test_files_written_with_parents(files, guest, mode_owner):
    done = inject.inject_data(files, inject.InjectionRequest(
        files=[('/opt/lab/motd', b'hello\n'), ('/etc/issue', 'text\n')]))
    assert results(done) == [('file /opt/lab/motd', 'written'),
                             ('file /etc/issue', 'written')]
    assert (guest / 'opt/lab/motd').read_bytes() == b'hello\n'
    assert (guest / 'etc/issue').read_bytes() == b'text\n'
    assert mode_owner(guest / 'opt/lab') == (0o755, 0, 0)
    assert mode_owner(guest / 'opt/lab/motd') == (0o644, 0, 0)


@pytest.mark.parametrize('option,value,request_files', [
    ('max_injected_files', 1, [('/a', b'1'), ('/b', b'2')]),
    ('max_injected_file_bytes', 4, [('/a', b'1'), ('/b', b'12345')]),
    ('max_injected_file_path_length', 8, [('/a', b'1'), ('/long/path', b'')]),
])
def test_limits_checked_before_any_write(files, guest, conf, option, value,
                                         request_files):
    conf.config(group='inject', **{option: value})
    before = tree(guest)
    # Metadata comes first and would be written if the files' limits
    # were only found when their turn came.
    with pytest.raises(exception.InjectionLimit, match=option):
        inject.inject_data(files, inject.InjectionRequest(
            metadata={'a': 1}, files=request_files))
    assert tree(guest) == before


def test_relative_file_path_refused_before_any_write(files, guest):
    before = tree(guest)
    with pytest.raises(exception.GuestPathRefused):
        inject.inject_data(files, inject.InjectionRequest(
            net='x', files=[('/ok', b''), ('etc/rel', b'x')]))
    assert tree(guest) == before


def test_selinux_autorelabel(files, guest, mode_owner):
    inject.inject_data(files, inject.InjectionRequest(metadata={'a': 1}))
    assert not (guest / '.autorelabel').exists()
    (guest / 'etc/selinux').mkdir()
    (guest / 'etc/selinux/config').write_text('SELINUX=enforcing\n')
    done = inject.inject_data(files, inject.InjectionRequest(key=KEY))
    assert results(done) == [('key', 'written'),
                             ('SELinux autorelabel', 'written')]
    assert done[-1].group == 'selinux'
    assert (guest / '.autorelabel').read_bytes() == b''
    assert mode_owner(guest / '.autorelabel') == (0o644, 0, 0)


def test_empty_request_writes_nothing(files, guest):
    (guest / 'etc/selinux').mkdir()
    (guest / 'etc/selinux/config').write_text('SELINUX=enforcing\n')
    before = tree(guest)
    request = inject.InjectionRequest(metadata={})
    assert request.is_empty()
    assert inject.inject_data(files, request) == []
    assert tree(guest) == before


def test_logs_what_not_values(files, guest, caplog):
    caplog.set_level(logging.INFO, logger='nova_ksm_inject')
    inject.inject_data(files, inject.InjectionRequest(
        key=KEY, admin_password=PASSWORD), image_desc='/img/disk.raw')
    messages = [r.getMessage() for r in caplog.records]
    assert 'Injecting key into image /img/disk.raw' in messages
    assert 'Injecting admin_password into image /img/disk.raw' in messages
    assert not any('AAAAC3' in m or PASSWORD in m for m in messages)


def test_passwd_hash_warning(files, guest, caplog):
    (guest / 'etc/passwd').write_bytes(b'root:$6$x$y:0:0::/root:/bin/sh\n')
    caplog.set_level(logging.WARNING, logger='nova_ksm_inject')
    inject.inject_data(files, inject.InjectionRequest(
        admin_password=PASSWORD))
    assert any('does not defer to /etc/shadow' in r.getMessage()
               for r in caplog.records)
    assert (guest / 'etc/passwd').read_bytes().startswith(b'root:$6$x$y:')


# --- mandatory and best-effort items, one mount --------------------------

def test_best_effort_failure_while_preparing_skips_only_that_item(
        files, guest, caplog):
    os.unlink(guest / 'etc/shadow')
    caplog.set_level(logging.INFO, logger='nova_ksm_inject')
    done = inject.inject_data(files, inject.InjectionRequest(
        key=KEY, admin_password=PASSWORD, files=[('/etc/motd', b'hi\n')],
        mandatory=('files',)), image_desc='/img/disk')
    assert results(done) == [('key', 'written'),
                             ('admin_password', 'failed'),
                             ('file /etc/motd', 'written')]
    assert 'no /etc/shadow' in done[1].reason
    assert (guest / 'etc/motd').read_bytes() == b'hi\n'
    assert (guest / 'root/.ssh/authorized_keys').exists()
    # Logged, but not as an error: the caller decides how loud it is.
    assert any('admin_password' in r.getMessage() and '/img/disk' in
               r.getMessage() and 'no /etc/shadow' in r.getMessage()
               for r in caplog.records if r.levelno < logging.ERROR)


def test_best_effort_item_over_its_limit_is_skipped(files, guest):
    done = inject.inject_data(files, inject.InjectionRequest(
        key=KEY + '\nssh-rsa AAAAinjected', metadata={'a': 1},
        mandatory=('files',)))
    assert results(done) == [('key', 'failed'), ('metadata', 'written')]
    assert 'several lines' in done[0].reason
    assert not (guest / 'root').exists()


def test_mandatory_failure_while_preparing_writes_no_best_effort_item(
        files, guest):
    before = tree(guest)
    with pytest.raises(exception.GuestPathRefused):
        inject.inject_data(files, inject.InjectionRequest(
            key=KEY, metadata={'a': 1}, files=[('relative', b'x')],
            mandatory=('files',)))
    assert tree(guest) == before


def test_best_effort_failure_while_writing_leaves_the_rest(files, guest):
    (guest / 'srv').mkdir()
    done = inject.inject_data(files, inject.InjectionRequest(
        metadata={'a': 1}, files=[('/srv', b'x'), ('/etc/motd', b'hi\n')],
        mandatory=()))
    assert results(done) == [('metadata', 'written'),
                             ('file /srv', 'failed'),
                             ('file /etc/motd', 'written')]
    assert done[1].group == 'files' and 'not a regular file' in \
        done[1].reason
    assert (guest / 'etc/motd').read_bytes() == b'hi\n'


def test_mandatory_failure_while_writing_raises(files, guest):
    (guest / 'srv').mkdir()
    with pytest.raises(exception.GuestPathRefused, match='not a regular'):
        inject.inject_data(files, inject.InjectionRequest(
            files=[('/srv', b'x'), ('/etc/motd', b'hi\n')],
            mandatory=('files',)))
    assert not (guest / 'etc/motd').exists()
