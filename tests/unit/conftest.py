"""Shared fixtures for unit tests: no root, no devices."""

from oslo_config import fixture as config_fixture
import pytest

from nova_ksm_inject.conf import CONF
from nova_ksm_inject.privsep import checks
from nova_ksm_inject.privsep import client
from nova_ksm_inject.privsep import contexts
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
    in-process channel (:mod:`tests.unit.fake_privsep`). Returns the
    :class:`~tests.unit.fake_privsep.Wire`; at the end every entrypoint
    called must have checked its configuration files."""
    wire = fake_privsep.Wire()
    monkeypatch.setattr(client, 'is_root', lambda: False)
    monkeypatch.setattr(checks, 'check_config_files',
                        wire.check_config_files)
    for context in contexts.CONTEXTS:
        monkeypatch.setattr(context, 'channel',
                            fake_privsep.InProcessChannel(context, wire))
    yield wire
    assert all(wire.config_checked), (
        'entrypoints that did not check their configuration files: %s'
        % [name for name, checked in zip(wire.calls, wire.config_checked,
                                         strict=True)
           if not checked])


@pytest.fixture
def as_root(monkeypatch):
    """Privileged calls made as a root caller makes them: in-process,
    without privsep, whatever uid runs the tests."""
    monkeypatch.setattr(client, 'is_root', lambda: True)


@pytest.fixture(autouse=True)
def _reset_log_level():
    """Commands run in-process lower the package logger (quiet mode);
    undo that so tests do not depend on their order."""
    import logging
    logger = logging.getLogger('nova_ksm_inject')
    level = logger.level
    yield
    logger.setLevel(level)
