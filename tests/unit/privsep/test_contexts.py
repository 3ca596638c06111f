"""Our contexts start nova-ksm-inject-privsep-helper, with only the two
arguments it accepts, behind whatever root helper prefix was set."""

from oslo_privsep import priv_context
from oslo_utils import importutils
import pytest

from nova_ksm_inject.cmd import privsep_helper
from nova_ksm_inject.privsep import contexts

SOCK = '/tmp/tmpab_12xyz/privsep.sock'


@pytest.fixture
def prefix(monkeypatch):
    def set_prefix(root_helper):
        monkeypatch.setattr(priv_context, '_HELPER_COMMAND_PREFIX',
                            root_helper)
    return set_prefix


def test_the_helper_knows_our_contexts():
    assert privsep_helper.CONTEXTS == tuple(c.pypath
                                            for c in contexts.CONTEXTS)
    assert privsep_helper.PROG == contexts.HELPER


@pytest.mark.parametrize('context', contexts.CONTEXTS,
                         ids=lambda c: c.cfg_section)
def test_our_helper_behind_the_root_helper(conf, prefix, context):
    prefix(['sudo', 'nova-rootwrap', '/etc/nova/rootwrap.conf'])
    assert context.helper_command(SOCK) == [
        'sudo', 'nova-rootwrap', '/etc/nova/rootwrap.conf',
        'nova-ksm-inject-privsep-helper', '--privsep_context',
        context.pypath, '--privsep_sock_path', SOCK]


def test_init_sets_the_prefix_from_root_helper(conf, prefix):
    prefix(['sudo'])
    contexts.init('sudo -n')
    assert contexts.inject_pctxt.helper_command(SOCK)[:3] == [
        'sudo', '-n', 'nova-ksm-inject-privsep-helper']


def test_helper_command_wins(conf, prefix):
    prefix(['sudo'])
    conf.config(group='privsep_ksm',
                helper_command='sudo /opt/venv/bin/'
                               'nova-ksm-inject-privsep-helper')
    assert contexts.ksm_pctxt.helper_command(SOCK) == [
        'sudo', '/opt/venv/bin/nova-ksm-inject-privsep-helper',
        '--privsep_context', contexts.ksm_pctxt.pypath,
        '--privsep_sock_path', SOCK]


@pytest.mark.parametrize('context', contexts.CONTEXTS,
                         ids=lambda c: c.cfg_section)
def test_a_pypath_names_its_context(context):
    # How privsep's daemon finds the context it was started for.
    assert importutils.import_class(context.pypath) is context
