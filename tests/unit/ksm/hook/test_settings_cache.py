"""The hook's settings cache: keyed by the config files' identity."""

import os

import pytest

from nova_ksm_inject.cmd import common
from nova_ksm_inject.ksm.hook import settings_cache


@pytest.fixture
def conf_file(tmp_path, monkeypatch):
    path = tmp_path / 'nova.conf'
    path.write_text('[ksm]\nenabled = auto\n')
    monkeypatch.setenv(settings_cache.CONFIG_ENV, str(path))
    return path


@pytest.mark.parametrize('env', [None, '', '/a.conf', '/a.conf:/b.conf:'])
def test_config_files_are_the_commands_files(monkeypatch, env):
    if env is None:
        monkeypatch.delenv(settings_cache.CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(settings_cache.CONFIG_ENV, env)
    assert settings_cache.config_files() == common.config_files()
    assert (settings_cache.CONFIG_ENV, settings_cache.DEFAULT_CONFIG_FILE) == (
        common.CONFIG_ENV, common.DEFAULT_CONFIG_FILE)


def test_store_then_load(conf_file, tmp_path):
    key = settings_cache.identity([str(conf_file)])
    cache = str(tmp_path / 'run' / 'cache.json')
    settings_cache.store(key, {'ksm': {'enabled': 'auto'}}, cache)
    assert settings_cache.load(key, cache) == {'ksm': {'enabled': 'auto'}}
    assert oct(os.stat(cache).st_mode & 0o777) == '0o644'


@pytest.mark.parametrize('change', ['edit', 'remove', 'env', 'other_file'])
def test_any_change_makes_the_key_differ(conf_file, monkeypatch, tmp_path,
                                         change):
    key = settings_cache.identity(settings_cache.config_files())
    if change == 'edit':
        # Same size, later mtime: identity still changes.
        conf_file.write_text('[ksm]\nenabled = true\n')
        os.utime(conf_file, ns=(0, os.stat(conf_file).st_mtime_ns + 1))
    elif change == 'remove':
        conf_file.unlink()
    elif change == 'env':
        monkeypatch.setenv('OS_KSM__ENABLED', 'false')
    else:
        other = tmp_path / 'other.conf'
        other.write_text('')
        monkeypatch.setenv(settings_cache.CONFIG_ENV,
                           '%s:%s' % (conf_file, other))
    assert settings_cache.identity(settings_cache.config_files()) != key


def test_stale_missing_or_symlinked_cache_is_none(conf_file, tmp_path):
    key = settings_cache.identity([str(conf_file)])
    cache = tmp_path / 'cache.json'
    assert settings_cache.load(key, str(cache)) is None
    settings_cache.store(['other'], {'ksm': {}}, str(cache))
    assert settings_cache.load(key, str(cache)) is None
    settings_cache.store(key, {'ksm': {}}, str(cache))
    link = tmp_path / 'link.json'
    link.symlink_to(cache)
    assert settings_cache.load(key, str(link)) is None
    cache.write_text('{not json')
    assert settings_cache.load(key, str(cache)) is None
