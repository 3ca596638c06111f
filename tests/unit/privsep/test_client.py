"""The router imports no oslo.privsep until a job crosses to a daemon."""

from tests.unit import fresh_import


def test_importing_the_client_imports_no_privsep():
    # oslo.privsep imports eventlet (about 0.15 s), which a root caller
    # and the default handlers never need.
    assert fresh_import.modules_loaded(
        'nova_ksm_inject.privsep.client', ('oslo_privsep', 'eventlet')) == []
