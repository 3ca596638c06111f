"""Shared fixtures for unit tests: no root, no devices."""

from oslo_config import fixture as config_fixture
import pytest

from nova_ksm_inject import privileged
from nova_ksm_inject import privsep
from nova_ksm_inject.conf import CONF
from tests.unit import fake_privsep


@pytest.fixture
def conf(tmp_path):
    """CONF with overrides undone after the test; state_dir in tmp_path."""
    fixture = config_fixture.Config(CONF)
    fixture.setUp()
    fixture.config(group='inject', state_dir=str(tmp_path / 'state'))
    yield fixture
    fixture.cleanUp()


@pytest.fixture
def privsep_wire(monkeypatch):
    """Privileged calls made as an unprivileged caller makes them, whatever
    uid runs the tests: through the privsep entrypoints, over an
    in-process channel (:mod:`tests.unit.fake_privsep`). Yields the list
    of entrypoint names called."""
    calls = []
    monkeypatch.setattr(privileged, 'is_root', lambda: False)
    for context in privsep.CONTEXTS:
        monkeypatch.setattr(context, 'channel',
                            fake_privsep.InProcessChannel(context, calls))
    return calls


@pytest.fixture
def as_root(monkeypatch):
    """Privileged calls made as a root caller makes them: in-process,
    without privsep, whatever uid runs the tests."""
    monkeypatch.setattr(privileged, 'is_root', lambda: True)


@pytest.fixture(autouse=True)
def _reset_log_level():
    """Commands run in-process lower the package logger (quiet mode);
    undo that so tests do not depend on their order."""
    import logging
    logger = logging.getLogger('nova_ksm_inject')
    level = logger.level
    yield
    logger.setLevel(level)
