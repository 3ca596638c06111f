"""A privsep daemon's configuration is pinned when it starts: opened once
through no symlink, checked on its descriptors, parsed from them, and the
entrypoints refuse a daemon whose configuration was not pinned."""

import os
import socket
import types

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.privsep import checks


@pytest.fixture
def any_owner(monkeypatch):
    """Ownership and modes accepted, so that the rest of the walk can be
    tested in a temporary directory (under /tmp, mode 1777)."""
    seen = []
    monkeypatch.setattr(checks, '_refuse_owner',
                        lambda path, info, what: seen.append(what))
    return seen


@pytest.fixture
def unpinned(monkeypatch):
    monkeypatch.setattr(checks, '_pinned', None)


def test_a_file_only_root_could_write_is_pinned():
    # /etc/passwd: root's, 0644, in root's 0755 /etc and /.
    pinned = checks.open_pinned('/etc/passwd')
    try:
        assert pinned.config_path == '/proc/self/fd/%d' % pinned.fd
        with open('/etc/passwd') as f:
            assert pinned.read() == f.read()
        with open(pinned.config_path) as f:
            assert f.read() == pinned.read()
    finally:
        os.close(pinned.fd)


class _Owners:
    """``os`` as :mod:`checks` sees it, with every descriptor root's and
    not writable by group or others (``/tmp`` is 1777), except the paths
    given other owners or modes: the rules, whoever runs the tests."""

    def __init__(self, **by_path):
        self.by_path = by_path

    def __getattr__(self, name):
        return getattr(os, name)

    def fstat(self, fd):
        real = os.fstat(fd)
        uid, mode = self.by_path.get(
            os.readlink('/proc/self/fd/%d' % fd),
            (0, real.st_mode & ~0o022))
        fields = list(real[:10])
        fields[0], fields[4] = mode, uid
        return os.stat_result(fields)


def _refused(monkeypatch, config, **by_path):
    monkeypatch.setattr(checks, 'os', _Owners(**by_path))
    with pytest.raises(checks.Unsafe) as err:
        checks.open_pinned(str(config))
    return str(err.value)


def test_a_file_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    config = tmp_path / 'nova.conf'
    config.write_text('[DEFAULT]\n')
    error = _refused(monkeypatch, config,
                     **{str(config): (1000, 0o100644)})
    assert error == (
        'configuration file %s refused: the file belongs to uid 1000; '
        'keep it and every directory above it owned by root and not '
        'writable by group or others, with no symlink on the way (name '
        'the real file)' % config)


def test_a_directory_owned_by_another_user_is_refused(tmp_path,
                                                      monkeypatch):
    (tmp_path / 'etc').mkdir()
    config = tmp_path / 'etc' / 'nova.conf'
    config.write_text('[DEFAULT]\n')
    error = _refused(monkeypatch, config,
                     **{str(tmp_path / 'etc'): (1000, 0o040755)})
    assert ': %s belongs to uid 1000;' % (tmp_path / 'etc') in error


def test_a_file_under_a_world_writable_directory_is_refused(tmp_path,
                                                            monkeypatch):
    config = tmp_path / 'nova.conf'
    config.write_text('[DEFAULT]\n')
    error = _refused(monkeypatch, config, **{str(tmp_path): (0, 0o041777)})
    assert ': %s is writable by group or others (mode 1777);' % tmp_path \
        in error
    assert 'not writable by group or others' in error  # the fix


def test_the_fake_owners_pass_a_root_file(tmp_path, monkeypatch):
    config = tmp_path / 'nova.conf'
    config.write_text('[DEFAULT]\n')
    monkeypatch.setattr(checks, 'os', _Owners())
    os.close(checks.open_pinned(str(config)).fd)


@pytest.mark.parametrize('mode,uid,why', [
    (0o100644, 1000, 'belongs to uid 1000'),
    (0o100664, 0, 'writable by group or others (mode 664)'),
    (0o040777, 0, 'writable by group or others (mode 777)'),
])
def test_owner_and_mode_rules(mode, uid, why):
    info = types.SimpleNamespace(st_mode=mode, st_uid=uid)
    with pytest.raises(checks.Unsafe, match=r'%s' % why.replace(
            '(', r'\(').replace(')', r'\)')):
        checks._refuse_owner('/etc/nova/nova.conf', info, 'x')
    checks._refuse_owner('/x', types.SimpleNamespace(st_mode=0o100640,
                                                     st_uid=0), 'x')


def test_every_directory_on_the_way_is_checked(tmp_path, any_owner):
    (tmp_path / 'etc').mkdir()
    (tmp_path / 'etc' / 'nova.conf').write_text('[DEFAULT]\n')
    pinned = checks.open_pinned(str(tmp_path / 'etc' / 'nova.conf'))
    os.close(pinned.fd)
    depth = len(str(tmp_path / 'etc').strip('/').split('/'))
    assert len(any_owner) == depth + 2  # "/", each directory, the file


def test_a_symlinked_file_is_refused(tmp_path, any_owner):
    (tmp_path / 'real.conf').write_text('[DEFAULT]\n')
    os.symlink(tmp_path / 'real.conf', tmp_path / 'nova.conf')
    with pytest.raises(checks.Unsafe, match='nova.conf is a symlink'):
        checks.open_pinned(str(tmp_path / 'nova.conf'))


def test_a_symlinked_directory_is_refused(tmp_path, any_owner):
    (tmp_path / 'real').mkdir()
    (tmp_path / 'real' / 'nova.conf').write_text('[DEFAULT]\n')
    os.symlink(tmp_path / 'real', tmp_path / 'etc')
    with pytest.raises(checks.Unsafe, match='etc is a symlink'):
        checks.open_pinned(str(tmp_path / 'etc' / 'nova.conf'))


def test_what_is_not_a_regular_file_is_refused(tmp_path, any_owner):
    with pytest.raises(checks.Unsafe, match='not a regular file'):
        checks.open_pinned(str(tmp_path))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / 's'))
    with pytest.raises(checks.Unsafe):
        checks.open_pinned(str(tmp_path / 's'))
    sock.close()


@pytest.mark.parametrize('path', ['etc/nova.conf', '/etc/../tmp/x.conf',
                                  '/etc/./nova.conf', '/'])
def test_relative_or_dotted_paths_are_refused(path):
    with pytest.raises(checks.Unsafe, match='absolute path'):
        checks.open_pinned(path)


def test_missing_files(tmp_path, any_owner):
    missing = str(tmp_path / 'no' / 'nova.conf')
    assert checks.open_pinned(missing, missing_ok=True) is None
    assert checks.open_pinned(str(tmp_path / 'x'), missing_ok=True) is None
    with pytest.raises(checks.Unsafe, match='No such file'):
        checks.open_pinned(missing)


def test_the_pinned_file_is_what_was_checked_even_after_a_swap(tmp_path,
                                                               any_owner):
    (tmp_path / 'nova.conf').write_text('[inject]\nimage_dirs = /good\n')
    pinned = checks.open_pinned(str(tmp_path / 'nova.conf'))
    try:
        (tmp_path / 'evil.conf').write_text('[inject]\nimage_dirs = /\n')
        os.rename(tmp_path / 'evil.conf', tmp_path / 'nova.conf')
        with open(pinned.config_path) as f:
            assert 'image_dirs = /good' in f.read()
    finally:
        os.close(pinned.fd)


def conf_with(files=(), dirs=()):
    """What the daemon parsed (``config_file``, ``config_dir``)."""
    return types.SimpleNamespace(config_file=list(files),
                                 config_dir=list(dirs))


@pytest.mark.usefixtures('unpinned')
def test_a_daemon_not_started_by_our_helper_refuses_to_work():
    with pytest.raises(exception.ConfigError,
                       match='not pinned.*nova-ksm-inject-privsep-helper'):
        checks.check_config_files(conf_with(['/etc/nova/nova.conf']))


@pytest.mark.usefixtures('unpinned')
def test_the_pinned_record_is_checked_not_paths(monkeypatch):
    pinned = checks.open_pinned('/etc/passwd')
    try:
        checks.pin([pinned])
        checks.check_config_files(conf_with([pinned.config_path]))
        for conf in (conf_with(['/etc/passwd']),
                     conf_with([pinned.config_path], ['/etc/nova']),
                     conf_with()):
            with pytest.raises(exception.ConfigError,
                               match='not the pinned files'):
                checks.check_config_files(conf)
        monkeypatch.setattr(pinned, 'identity', (0, 0))
        with pytest.raises(exception.ConfigError, match='was replaced'):
            checks.check_config_files(conf_with([pinned.config_path]))
    finally:
        os.close(pinned.fd)
