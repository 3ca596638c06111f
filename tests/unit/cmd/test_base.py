"""What every console script shares: one base parser, one SIGTERM rule,
and a start that imports nothing it does not need."""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from nova_ksm_inject.cmd import base
from nova_ksm_inject.cmd import ksm as cmd_ksm
from nova_ksm_inject.cmd import main
from nova_ksm_inject.cmd import tuner as cmd_tuner

CMD_DIR = os.path.dirname(os.path.abspath(base.__file__))
SHARED = ('--config-file', '--verbose', '--debug')


def _options(parser):
    return {s for action in parser._actions for s in action.option_strings}


@pytest.mark.parametrize('parser', [
    main.build_parser(), cmd_tuner.build_parser()],
    ids=['nova-ksm-inject', 'nova-ksm-tuner'])
def test_every_command_takes_the_shared_options(parser):
    assert set(SHARED) <= _options(parser)


def test_the_shared_options_are_defined_once():
    for name in sorted(os.listdir(CMD_DIR)):
        if name.endswith('.py') and name != 'base.py':
            with open(os.path.join(CMD_DIR, name)) as f:
                source = f.read()
            for option in SHARED:
                assert "'%s'" % option not in source, (name, option)


@pytest.mark.parametrize('argv', [
    ['--config-file', 'a.conf', '--debug', 'cleanup'],
    ['cleanup', '--config-file', 'a.conf', '--debug'],
    ['--config-file', 'a.conf', 'ksm', 'status', '--debug'],
])
def test_shared_options_before_or_after_the_subcommand(argv):
    args = main.build_parser().parse_args(argv)
    assert args.config_file == ['a.conf'] and args.debug
    assert not getattr(args, 'verbose', False)


def test_ksm_parser_standalone_gets_the_shared_options():
    parser = argparse.ArgumentParser()
    cmd_ksm.add_parser(parser.add_subparsers())
    args = parser.parse_args(['ksm', 'status', '-v', '--config-file', 'x'])
    assert args.verbose and args.config_file == ['x']


def test_daemon_help_says_it_logs_at_info():
    quiet = ' '.join(base.config_parent().format_help().split())
    daemon = ' '.join(base.config_parent(quiet=False).format_help().split())
    assert 'warnings and errors only' in quiet
    assert 'warnings and errors only' not in daemon


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_sigterm_unwinds_like_ctrl_c(restore_signals):
    base.on_sigterm()
    unwound = []
    with pytest.raises(KeyboardInterrupt):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
        finally:
            unwound.append(True)
    assert unwound == [True]


def test_sigterm_and_sigint_stop_a_daemon(restore_signals):
    for signum in (signal.SIGTERM, signal.SIGINT):
        stop = threading.Event()
        base.on_sigterm(stop)
        os.kill(os.getpid(), signum)
        assert stop.wait(5)


def _modules_after(code):
    """Top-level packages a fresh interpreter loaded running ``code``."""
    code += ('\nimport sys\nprint(" ".join(sorted({m.split(".")[0] '
             'for m in sys.modules})))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, check=True)
    return set(proc.stdout.split())


def test_parsing_and_help_import_no_library():
    loaded = _modules_after(
        'from nova_ksm_inject.cmd import main\n'
        'main.build_parser().parse_args(["inject", "x", "--format", "raw"])\n'
        'main.build_parser().format_help()')
    assert not loaded & {'oslo_config', 'oslo_log', 'oslo_concurrency',
                         'oslo_privsep', 'jinja2', 'stevedore', 'libvirt'}


def test_the_inject_path_imports_only_what_it_uses():
    # What ``inject`` imports before it runs the chain: no KSM, libvirt,
    # privsep (root runs in-process), oslo.concurrency, nor Jinja2 (only
    # an operator's network template needs it).
    loaded = _modules_after(
        'from nova_ksm_inject.cmd import common, disk, main\n'
        'from nova_ksm_inject.disk import api, chain, network, request\n'
        'from nova_ksm_inject.disk.handlers import loop\n'
        'network.render_network([{"name": "eth0", "use_dhcp": True}])')
    assert not loaded & {'oslo_concurrency', 'oslo_privsep', 'jinja2',
                         'libvirt'}
    assert {'oslo_config', 'oslo_log'} <= loaded


def test_console_script_exits_with_mains_code(monkeypatch):
    calls = []
    monkeypatch.setattr(main, 'main', lambda: calls.append('main') or 3)
    monkeypatch.setattr(main.gc, 'disable', lambda: calls.append('disable'))
    monkeypatch.setattr(main.gc, 'freeze', lambda: calls.append('freeze'))
    with pytest.raises(SystemExit) as exit_:
        main.console()
    assert exit_.value.code == 3
    assert calls == ['disable', 'main', 'freeze']


def test_the_console_script_is_console():
    setup_cfg = os.path.join(os.path.dirname(os.path.dirname(CMD_DIR)),
                             'setup.cfg')
    with open(setup_cfg) as f:
        assert ('nova-ksm-inject = nova_ksm_inject.cmd.main:console'
                in f.read())


def _blocked_reading(pid, path):
    """Whether ``pid`` sleeps in a system call on its descriptor of
    ``path`` (a read: nothing else it does takes that descriptor and
    blocks). /proc/PID/syscall names the call only while the task is
    blocked in it, "running" otherwise."""
    try:
        with open('/proc/%d/syscall' % pid) as f:
            fields = f.read().split()
        if len(fields) < 2 or not fields[0].isdigit():
            return False
        return os.readlink('/proc/%d/fd/%d' % (pid, int(fields[1], 16))) \
            == path
    except (OSError, ValueError):
        return False


def test_sigterm_stops_the_command_like_ctrl_c(tmp_path):
    # The real command, blocked reading its --key-file (a FIFO): SIGTERM
    # ends it as Ctrl-C does, with one line and exit status 130.
    # The signal is sent only once the command sleeps in read(): one
    # arriving between its open() and its read() only sets Python's flag,
    # and the read then blocks for ever (the handler runs between
    # bytecodes, and the read has no data to return).
    conf = tmp_path / 'nova.conf'
    conf.write_text('[inject]\nstate_dir = %s\n' % (tmp_path / 'state'))
    fifo = tmp_path / 'key.pub'
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'nova_ksm_inject.cmd.main', 'inject',
         str(tmp_path / 'disk.img'), '--config-file', str(conf),
         '--key-file', str(fifo)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # until the command has the FIFO open for reading
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.01)
        while not _blocked_reading(proc.pid, os.path.realpath(fifo)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        os.close(writer)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err == 'nova-ksm-inject: error: interrupted\n'
