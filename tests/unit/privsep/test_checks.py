"""A privsep daemon refuses configuration files that anyone but root
could have written (the caller names them on its command line)."""

import os
import types

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.privsep import checks


def conf_with(files=(), dirs=()):
    """What the daemon was started with (``--config-file/--config-dir``)."""
    return types.SimpleNamespace(config_file=list(files),
                                 config_dir=list(dirs))


def test_files_only_root_could_write_are_accepted():
    # /etc/passwd: root's, 0644, in root's 0755 /etc and /.
    checks.check_config_files(conf_with(['/etc/passwd']))
    checks.check_config_files(conf_with())


def test_file_in_a_world_writable_directory_is_refused(tmp_path):
    config = tmp_path / 'nova.conf'
    config.write_text('[DEFAULT]\n')
    os.chmod(config, 0o600)
    with pytest.raises(exception.ConfigError) as err:
        checks.check_config_files(conf_with([str(config)]))
    assert str(config) in str(err.value)
    assert 'belongs to uid' in str(err.value) or \
        'writable by group or others' in str(err.value)


def test_every_file_of_a_config_dir_is_checked(tmp_path):
    (tmp_path / 'nova.conf.d').mkdir()
    (tmp_path / 'nova.conf.d' / '50-evil.conf').write_text('[DEFAULT]\n')
    with pytest.raises(exception.ConfigError, match='refuses configuration'):
        checks.check_config_files(conf_with(
            ['/etc/passwd'], [str(tmp_path / 'nova.conf.d')]))
