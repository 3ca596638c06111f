"""nova-ksm-inject-privsep-helper takes exactly what privsep appends, for
our contexts, refuses anything else before oslo is set up, and reads
root's fixed configuration files."""

import os
import socket
import subprocess
import sys

import pytest

from nova_ksm_inject.cmd import privsep_helper
from nova_ksm_inject.privsep import checks

CONTEXT = privsep_helper.CONTEXTS[0]


@pytest.fixture
def sock(tmp_path):
    """A socket where privsep puts one: privsep.sock in a 0700 mkdtemp."""
    directory = tmp_path / 'tmpab_12xyz'
    directory.mkdir(mode=0o700)
    path = str(directory / 'privsep.sock')
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    yield path
    listener.close()


def args(sock, context=CONTEXT):
    return ['--privsep_context', context, '--privsep_sock_path', sock]


def test_exactly_what_privsep_appends_is_accepted(sock):
    for context in privsep_helper.CONTEXTS:
        assert privsep_helper.parse_args(args(sock, context)) == (context,
                                                                  sock)


@pytest.mark.parametrize('extra', [
    ['--log-config-append', '/tmp/evil.conf'],
    ['--config-file', '/tmp/evil.conf'],
    ['--config-dir', '/tmp/evil.d'],
    ['--log-file', '/etc/cron.d/evil'],
    ['--debug'],
    ['--privsep_context', CONTEXT],
])
@pytest.mark.parametrize('where', ['before', 'after'])
def test_any_other_argument_is_refused(sock, extra, where):
    argv = extra + args(sock) if where == 'before' else args(sock) + extra
    with pytest.raises(privsep_helper.Refused, match='takes exactly'):
        privsep_helper.parse_args(argv)


@pytest.mark.parametrize('argv', [
    [], ['--help'],
    ['--privsep_sock_path', 'S', '--privsep_context', CONTEXT],
    ['--privsep_context=%s' % CONTEXT, '--privsep_sock_path', 'S', 'x'],
])
def test_other_shapes_are_refused(argv):
    with pytest.raises(privsep_helper.Refused, match='takes exactly'):
        privsep_helper.parse_args(argv)


@pytest.mark.parametrize('context', [
    'nova.privsep.sys_admin_pctxt', 'os.system', CONTEXT + ' ',
    'nova_ksm_inject.privsep.checks'])
def test_other_contexts_are_refused(sock, context):
    with pytest.raises(privsep_helper.Refused, match='refused context'):
        privsep_helper.parse_args(args(sock, context))


@pytest.mark.parametrize('path', [
    '/run/libvirt/libvirt-sock', '/tmp/tmpab_12xyz/other.sock',
    '/tmp/../run/tmpab_12xyz/privsep.sock', 'tmp/tmpab_12xyz/privsep.sock',
    '/tmp/tmpAB_12XYZ/privsep.sock', '/tmp/tmpab_12xyz/privsep.sock\n'])
def test_sockets_privsep_would_not_make_are_refused(path):
    with pytest.raises(privsep_helper.Refused, match='not DIR/tmpXXXXXXXX'):
        privsep_helper.parse_args(args(path))


def test_a_socket_in_a_shared_directory_is_refused(sock):
    os.chmod(os.path.dirname(sock), 0o755)
    with pytest.raises(privsep_helper.Refused, match='private'):
        privsep_helper.parse_args(args(sock))


def test_a_symlinked_socket_directory_is_refused(sock, tmp_path):
    link = tmp_path / 'tmplink_xyz'
    os.symlink(os.path.dirname(sock), link)
    with pytest.raises(privsep_helper.Refused, match='private'):
        privsep_helper.parse_args(args(str(link / 'privsep.sock')))


def test_what_is_not_a_socket_is_refused(tmp_path):
    directory = tmp_path / 'tmpab_12xyz'
    directory.mkdir(mode=0o700)
    (directory / 'privsep.sock').write_text('')
    with pytest.raises(privsep_helper.Refused, match='not a socket'):
        privsep_helper.parse_args(args(str(directory / 'privsep.sock')))
    with pytest.raises(privsep_helper.Refused, match='No such file'):
        privsep_helper.parse_args(args(str(tmp_path / 'tmpzz_12xyz' /
                                           'privsep.sock')))


def test_refusal_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(privsep_helper, 'serve', pytest.fail)
    code = privsep_helper.main(['--log-config-append', '/tmp/x'] +
                               args('/tmp/tmpab_12xyz/privsep.sock'))
    assert code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert err.startswith('nova-ksm-inject-privsep-helper: error: refused')


def test_a_logging_config_is_never_evaluated(tmp_path):
    """A logging configuration that would run code as root, passed in
    a fresh interpreter: refused before oslo.log could read the file."""
    marker = tmp_path / 'marker'
    evil = tmp_path / 'evil.conf'
    evil.write_text(
        '[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n'
        '[logger_root]\nhandlers=h\n[handler_h]\nclass=StreamHandler\n'
        'args=(open(%r, "w"),)\n' % str(marker))
    for option in ('--log-config-append', '--log-config', '--config-file'):
        proc = subprocess.run(
            [sys.executable, '-c', 'import sys; from nova_ksm_inject.cmd '
             'import privsep_helper as h; sys.exit(h.main())', option,
             str(evil)] + args('/tmp/tmpab_12xyz/privsep.sock'),
            capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert not marker.exists()


@pytest.fixture
def etc(tmp_path, monkeypatch):
    """The helper's fixed paths moved into tmp_path, owners not checked."""
    monkeypatch.setattr(checks, '_refuse_owner', lambda *a: None)
    monkeypatch.setattr(privsep_helper, 'SETTINGS', str(tmp_path / 'h.conf'))
    monkeypatch.setattr(privsep_helper, 'CONFIG_FILES',
                        (str(tmp_path / 'nova.conf'),))
    monkeypatch.setattr(privsep_helper, 'OPTIONAL_CONFIG_FILES',
                        (str(tmp_path / 'nova-compute.conf'),))
    (tmp_path / 'nova.conf').write_text('[DEFAULT]\n')
    return tmp_path


def pinned_paths():
    files = privsep_helper.pinned_config_files()
    for pinned in files:
        os.close(pinned.fd)
    return [os.path.basename(f.path) for f in files]


def test_default_config_files(etc):
    assert pinned_paths() == ['nova.conf']
    (etc / 'nova-compute.conf').write_text('[DEFAULT]\n')
    assert pinned_paths() == ['nova.conf', 'nova-compute.conf']
    os.unlink(etc / 'nova.conf')
    with pytest.raises(checks.Unsafe, match='nova.conf refused'):
        pinned_paths()


def test_settings_replace_the_list(etc):
    (etc / 'site.conf').write_text('[DEFAULT]\n')
    (etc / 'h.conf').write_text('[privsep_helper]\nconfig_files = %s, %s\n'
                                % (etc / 'site.conf', etc / 'nova.conf'))
    assert pinned_paths() == ['site.conf', 'nova.conf']


@pytest.mark.parametrize('text', ['', '[privsep_helper]\n',
                                  '[privsep_helper]\nconfig_files = ,\n',
                                  'config_files = /etc/nova/nova.conf\n'])
def test_bad_settings_are_refused(etc, text):
    (etc / 'h.conf').write_text(text)
    with pytest.raises(privsep_helper.Refused, match='h.conf'):
        pinned_paths()


def test_symlinked_settings_are_refused(etc):
    (etc / 'real.conf').write_text('[privsep_helper]\nconfig_files = /x\n')
    os.symlink(etc / 'real.conf', etc / 'h.conf')
    with pytest.raises(checks.Unsafe, match='symlink'):
        pinned_paths()
