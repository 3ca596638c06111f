"""The shipped rootwrap filters hand out privsep-helper and nothing else.

Loaded and matched by oslo.rootwrap itself, as nova-rootwrap would: the
filters must admit exactly the command privsep builds for our two
contexts, and refuse every command line that would give the caller root
(mount, losetup, qemu-*, guestmount with arguments of its choosing, a
privsep-helper for another context or reading a config file the caller
wrote).

oslo.rootwrap itself always adds a filter admitting ``privsep-helper``
with any arguments (``wrapper.load_filters``); that one is not ours and
is left out here. Against it, the privileged side refuses configuration
files a non-root user could have written (``privsep/checks.py``).
"""

import os
import sys

from oslo_rootwrap import filters as rw_filters
from oslo_rootwrap import wrapper
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FILTERS_DIR = os.path.join(ROOT, 'etc', 'nova', 'rootwrap.d')
CONTEXTS = ('nova_ksm_inject.privsep.inject_pctxt',
            'nova_ksm_inject.privsep.ksm_pctxt')
SOCK = '/tmp/tmpab_12x/privsep.sock'

# Command lines that would hand root to whoever may run them.
DANGEROUS = [
    ['mount', '--bind', '/tmp/x', '/etc'],
    ['mount', '-o', 'nosuid,nodev,noexec', '/dev/loop0', '/mnt'],
    ['umount', '/etc'],
    ['losetup', '--find', '--show', '/etc/shadow'],
    ['partx', '--delete', '/dev/sda'],
    ['qemu-img', 'info', '-f', 'raw', '/etc/shadow'],
    ['qemu-nbd', '--connect', '/dev/nbd0', '/etc/shadow'],
    ['qemu-storage-daemon', '--blockdev',
     'driver=file,filename=/etc/shadow,node-name=f', '--export',
     'type=fuse,id=e,node-name=f,mountpoint=/tmp/x,writable=on'],
    ['guestmount', '-a', '/dev/sda', '-i', '/tmp/x'],
    ['guestunmount', '/'],
    ['sh', '-c', 'id'],
    ['privsep-helper', '--privsep_context', 'nova.privsep.sys_admin_pctxt',
     '--privsep_sock_path', SOCK],
    ['privsep-helper', '--config-file', '/tmp/evil.conf',
     '--privsep_context', CONTEXTS[0], '--privsep_sock_path', SOCK],
    ['privsep-helper', '--config-file', '/etc/nova/../../tmp/evil.conf',
     '--privsep_context', CONTEXTS[0], '--privsep_sock_path', SOCK],
    ['privsep-helper', '--config-file', '/etc/nova/nova.conf',
     '--privsep_context', 'os.system', '--privsep_sock_path', SOCK],
    ['privsep-helper', '--config-file', '/etc/nova/nova.conf',
     '--privsep_context', CONTEXTS[0], '--privsep_sock_path', SOCK,
     '--config-file', '/tmp/evil.conf'],
]


EXEC_DIRS = [os.path.dirname(sys.executable), '/usr/sbin', '/usr/bin',
             '/sbin', '/bin']


def ours(loaded):
    """Our file's filters, without the one oslo.rootwrap always adds."""
    return [f for f in loaded if f.name != 'privsep-helper']


@pytest.fixture(scope='module')
def filters():
    loaded = ours(wrapper.load_filters([FILTERS_DIR]))
    assert loaded, 'no filter loaded from %s' % FILTERS_DIR
    return loaded


def match(filters, cmd):
    return wrapper.match_filter(filters, cmd, exec_dirs=EXEC_DIRS)


def helper(context, *config_files):
    cmd = ['privsep-helper']
    for path in config_files:
        cmd += ['--config-file', path]
    return cmd + ['--privsep_context', context, '--privsep_sock_path', SOCK]


@pytest.mark.parametrize('context', CONTEXTS)
@pytest.mark.parametrize('config_files', [
    ('/etc/nova/nova.conf',),
    ('/etc/nova/nova.conf', '/etc/nova/nova-compute.conf')])
def test_privsep_helper_for_our_contexts_is_allowed(filters, context,
                                                    config_files):
    matched = match(filters, helper(context, *config_files))
    assert matched.get_command(helper(context, *config_files))[-1] == SOCK


@pytest.mark.parametrize('cmd', DANGEROUS, ids=lambda c: ' '.join(c)[:60])
def test_commands_that_give_root_away_are_refused(filters, cmd):
    with pytest.raises(wrapper.NoFilterMatched):
        match(filters, cmd)


def test_filters_run_privsep_helper_only(filters):
    for entry in filters:
        assert isinstance(entry, rw_filters.RegExpFilter), entry
        assert os.path.basename(entry.exec_path) == 'privsep-helper'
        assert entry.args[0] == 'privsep-helper'


def test_filters_name_the_contexts_that_exist():
    from nova_ksm_inject import privsep

    named = {entry.args[entry.args.index('--privsep_context') + 1]
             .replace('\\.', '.')
             for entry in ours(wrapper.load_filters([FILTERS_DIR]))}
    assert named == set(CONTEXTS)
    for context in privsep.CONTEXTS:
        assert context.pypath in named
