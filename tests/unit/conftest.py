"""Shared fixtures for unit tests: no root, no devices."""

from oslo_config import fixture as config_fixture
import pytest

from nova_ksm_inject.conf import CONF


@pytest.fixture
def conf(tmp_path):
    """CONF with overrides undone after the test; state_dir in tmp_path."""
    fixture = config_fixture.Config(CONF)
    fixture.setUp()
    fixture.config(group='inject', state_dir=str(tmp_path / 'state'))
    yield fixture
    fixture.cleanUp()


@pytest.fixture(autouse=True)
def _reset_log_level():
    """Commands run in-process lower the package logger (quiet mode);
    undo that so tests do not depend on their order."""
    import logging
    logger = logging.getLogger('nova_ksm_inject')
    level = logger.level
    yield
    logger.setLevel(level)
