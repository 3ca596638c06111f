"""``utils.execute``: oslo.concurrency's contract, on real (harmless)
commands."""

import logging
import os
import signal
import subprocess

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from tests.unit import fresh_import

SH = '/bin/sh'


def test_returns_decoded_stdout_and_stderr():
    out, err = utils.execute(SH, '-c', 'echo out; echo err >&2')
    assert (out, err) == ('out\n', 'err\n')


def test_arguments_are_never_a_shell_line(tmp_path):
    marker = tmp_path / 'marker'
    out, _err = utils.execute('echo', '$(touch %s)' % marker, 7)
    assert out == '$(touch %s) 7\n' % marker
    assert not marker.exists()


def test_undecodable_output_survives():
    out, _err = utils.execute(SH, '-c', r"printf '\377'")
    assert os.fsencode(out) == b'\xff'


def test_nonzero_exit_names_the_action_and_the_last_line():
    with pytest.raises(exception.CommandFailed) as err:
        utils.execute(SH, '-c', 'echo first >&2; echo "the cause" >&2; '
                      'exit 3', action='attaching a loop device')
    message = str(err.value)
    assert message.startswith('Attaching a loop device failed: /bin/sh -c')
    assert message.endswith('exited 3: the cause')


def test_check_exit_code_false_returns_the_output():
    assert utils.execute(SH, '-c', 'echo x; exit 1',
                         check_exit_code=False) == ('x\n', '')


def test_missing_binary_names_the_package():
    with pytest.raises(exception.ToolMissing) as err:
        utils.execute('qemu-img-not-here', 'info', action='inspecting')
    assert 'qemu-img-not-here' in str(err.value)
    assert 'while inspecting' in str(err.value)


def test_missing_binary_of_a_known_package(monkeypatch):
    monkeypatch.setenv('PATH', '/nonexistent')
    with pytest.raises(exception.ToolMissing, match='package qemu-utils'):
        utils.execute('qemu-img', 'info')


def test_stdin_is_closed_or_the_input():
    assert utils.execute('cat')[0] == ''
    assert utils.execute('cat', process_input='text')[0] == 'text'
    assert utils.execute('cat', process_input=b'\x00b')[0] == '\x00b'


def test_cwd_and_environment(tmp_path):
    out, _err = utils.execute(SH, '-c', 'pwd; echo "$ONLY"', cwd=str(tmp_path),
                              env_variables={'ONLY': 'this'})
    assert out == '%s\nthis\n' % tmp_path


def test_timeout_leaves_the_process_to_the_caller():
    started = []
    with pytest.raises(subprocess.TimeoutExpired):
        utils.execute('sleep', '30', timeout=0.1, on_execute=started.append)
    proc = started[0]
    try:
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_preexec_fn_limits_the_child():
    limits = utils.ResourceLimits(cpu_time=7, address_space=2 ** 32)
    out, _err = utils.execute(SH, '-c', 'ulimit -t; ulimit -v',
                              preexec_fn=limits)
    assert out.split() == ['7', str(2 ** 32 // 1024)]


def test_sigpipe_is_not_ignored_in_the_child():
    # Python ignores SIGPIPE; tools expect the default (die on a closed
    # pipe), as oslo.concurrency restores it.
    out, _err = utils.execute('grep', '^SigIgn:', '/proc/self/status')
    ignored = int(out.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))


def test_logs_the_command_and_its_result(caplog):
    with caplog.at_level(logging.DEBUG, logger='nova_ksm_inject.utils'):
        utils.execute('true', 'x')
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == 'Running cmd (subprocess): true x'
    assert messages[1].startswith('CMD "true x" returned: 0 in ')


def test_importing_it_loads_no_oslo_concurrency():
    # oslo.concurrency's processutils costs a fifth of a command's start.
    assert fresh_import.modules_loaded(
        'nova_ksm_inject.utils',
        ('oslo_concurrency', 'oslo_utils.strutils')) == []
