"""The shipped rootwrap filters hand out nova-ksm-inject-privsep-helper,
with exactly the arguments privsep appends, and nothing else.

Loaded and matched by oslo.rootwrap itself, as nova-rootwrap would: the
filters must admit exactly the command privsep builds for our two
contexts, and refuse every command line that would give the caller root
(mount, losetup, qemu-*, guestmount with arguments of its choosing,
privsep-helper in any form, our helper for another context, with a
config or logging file, or with a socket privsep would not make).

oslo.rootwrap itself always adds a filter admitting ``privsep-helper``
with any arguments (``wrapper.load_filters``); that one is not ours and
is left out here. Against it, our entrypoints refuse to work in a daemon
that our helper did not start (``privsep/checks.py``), and the operator
keeps privsep-helper out of rootwrap's exec_dirs where nova does not
need it.
"""

import os

from oslo_rootwrap import filters as rw_filters
from oslo_rootwrap import wrapper
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FILTERS_DIR = os.path.join(ROOT, 'etc', 'nova', 'rootwrap.d')
CONTEXTS = ('nova_ksm_inject.privsep.inject_pctxt',
            'nova_ksm_inject.privsep.ksm_pctxt')
HELPER = 'nova-ksm-inject-privsep-helper'
SOCK = '/tmp/tmpab_12xyz/privsep.sock'

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
    ['privsep-helper', '--privsep_context', CONTEXTS[0],
     '--privsep_sock_path', SOCK],
    ['privsep-helper', '--config-file', '/etc/nova/nova.conf',
     '--privsep_context', CONTEXTS[0], '--privsep_sock_path', SOCK],
    [HELPER, '--config-file', '/etc/nova/nova.conf',
     '--privsep_context', CONTEXTS[0], '--privsep_sock_path', SOCK],
    [HELPER, '--log-config-append', '/tmp/evil.conf',
     '--privsep_context', CONTEXTS[0], '--privsep_sock_path', SOCK],
    [HELPER, '--privsep_context', CONTEXTS[0], '--privsep_sock_path', SOCK,
     '--log-file', '/etc/cron.d/x'],
    [HELPER, '--privsep_context', 'nova.privsep.sys_admin_pctxt',
     '--privsep_sock_path', SOCK],
    [HELPER, '--privsep_context', 'os.system', '--privsep_sock_path', SOCK],
    [HELPER, '--privsep_sock_path', SOCK, '--privsep_context', CONTEXTS[0]],
    [HELPER, '--privsep_context', CONTEXTS[0], '--privsep_sock_path',
     '/run/libvirt/libvirt-sock'],
    [HELPER, '--privsep_context', CONTEXTS[0], '--privsep_sock_path',
     '/tmp/../run/tmpab_12xyz/privsep.sock'],
    [HELPER, '--privsep_context', CONTEXTS[0], '--privsep_sock_path',
     SOCK + ' '],
]


def ours(loaded):
    """Our file's filters, without the one oslo.rootwrap always adds."""
    return [f for f in loaded if f.name != 'privsep-helper']


@pytest.fixture(scope='module')
def exec_dirs(tmp_path_factory):
    """rootwrap's exec_dirs: one holding the helper, then the system's."""
    bin_dir = tmp_path_factory.mktemp('bin')
    (bin_dir / HELPER).write_text('#!/bin/sh\n')
    (bin_dir / HELPER).chmod(0o755)
    return [str(bin_dir), '/usr/sbin', '/usr/bin', '/sbin', '/bin']


@pytest.fixture(scope='module')
def filters():
    loaded = ours(wrapper.load_filters([FILTERS_DIR]))
    assert loaded, 'no filter loaded from %s' % FILTERS_DIR
    return loaded


def helper(context, sock=SOCK):
    return [HELPER, '--privsep_context', context, '--privsep_sock_path', sock]


@pytest.mark.parametrize('context', CONTEXTS)
@pytest.mark.parametrize('sock', [
    SOCK, '/var/lib/nova/tmp/tmp_0abcdef/privsep.sock',
    '/tmpzzzzzzzz/privsep.sock'])
def test_our_helper_for_our_contexts_is_allowed(filters, exec_dirs, context,
                                                sock):
    matched = wrapper.match_filter(filters, helper(context, sock),
                                   exec_dirs=exec_dirs)
    command = matched.get_command(helper(context, sock), exec_dirs=exec_dirs)
    assert command[0] == os.path.join(exec_dirs[0], HELPER)
    assert command[1:] == helper(context, sock)[1:]


@pytest.mark.parametrize('cmd', DANGEROUS, ids=lambda c: ' '.join(c)[:60])
def test_commands_that_give_root_away_are_refused(filters, exec_dirs, cmd):
    with pytest.raises(wrapper.NoFilterMatched):
        wrapper.match_filter(filters, cmd, exec_dirs=exec_dirs)


def test_filters_run_our_helper_only_with_privseps_arguments(filters):
    for entry in filters:
        assert isinstance(entry, rw_filters.RegExpFilter), entry
        assert entry.exec_path == HELPER
        assert entry.args[0] == HELPER
        assert entry.args[1::2][:2] == ('--privsep_context',
                                        '--privsep_sock_path')
        assert len(entry.args) == 5


def test_filters_admit_the_sockets_the_helper_admits(filters):
    from nova_ksm_inject.cmd import privsep_helper

    for entry in filters:
        assert entry.args[-1] == privsep_helper.SOCK_PATH.pattern


def test_filters_name_the_contexts_that_exist():
    from nova_ksm_inject.privsep import contexts

    named = {entry.args[entry.args.index('--privsep_context') + 1]
             .replace('\\.', '.')
             for entry in ours(wrapper.load_filters([FILTERS_DIR]))}
    assert named == set(CONTEXTS)
    for context in contexts.CONTEXTS:
        assert context.pypath in named
