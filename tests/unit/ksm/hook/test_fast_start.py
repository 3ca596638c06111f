"""The hook's cached path: its loggers and deferred modules."""

import logging
import os
import socket
import subprocess
import sys

from nova_ksm_inject.cmd import hook as cmd_hook
from nova_ksm_inject.ksm.hook import fast_start


def _stdlib_line(tmp_path, level, name, msg, *args):
    handler = logging.FileHandler(tmp_path / 'std.log')
    handler.setFormatter(logging.Formatter(cmd_hook.LOG_FORMAT))
    record = logging.LogRecord(name, getattr(logging, level), __file__, 1,
                               msg, args, None)
    handler.emit(record)
    handler.close()
    return (tmp_path / 'std.log').read_text()


def test_lines_look_like_the_full_paths(tmp_path):
    sink = fast_start.Sink(str(tmp_path / 'hook.log'))
    fast_start.Logger('nova_ksm_inject.ksm.hook.handler', sink).info(
        'libvirt %s %s of guest %s', 'prepare', 'begin', 'vm1')
    ours = (tmp_path / 'hook.log').read_text()
    theirs = _stdlib_line(tmp_path, 'INFO',
                          'nova_ksm_inject.ksm.hook.handler',
                          'libvirt %s %s of guest %s', 'prepare', 'begin',
                          'vm1')
    # Equal but for the timestamp's milliseconds.
    assert ours.split(' ', 2)[2] == theirs.split(' ', 2)[2]
    assert ours[:19] == theirs[:19] or ours[:16] == theirs[:16]
    assert ' %d INFO nova_ksm_inject.ksm.hook.handler libvirt prepare ' \
        'begin of guest vm1\n' % os.getpid() in ours


def test_levels_and_exceptions(tmp_path, capsys):
    sink = fast_start.Sink(level='INFO')
    log = fast_start.Logger('x', sink)
    log.debug('hidden')
    log.warning('shown %d', 1)
    try:
        raise ValueError('boom')
    except ValueError:
        log.exception('failed for %s', 'vm1')
    err = capsys.readouterr().err
    assert 'hidden' not in err
    assert ' WARNING x shown 1\n' in err
    assert 'ERROR x failed for vm1\nTraceback' in err
    assert 'ValueError: boom' in err
    assert log.isEnabledFor(logging.INFO) and not log.isEnabledFor(
        logging.DEBUG)


def test_syslog(tmp_path):
    path = str(tmp_path / 'log.sock')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        sink = fast_start.Sink(syslog_socket=path, prog='nova-ksm-hook')
        fast_start.Logger('mod', sink).error('bad %s', 'thing')
        assert server.recv(4096) == b'<11>nova-ksm-hook: mod bad thing'


STAND_IN = """
import sys
from nova_ksm_inject.ksm.hook import fast_start
assert fast_start.install_logging(fast_start.Sink(level='DEBUG'))
assert fast_start.defer_module('inspect')
from oslo_log import log as logging
logging.getLogger('m').debug('via %s', 'stand-in')
import dataclasses

@dataclasses.dataclass
class Documented:
    '''Needs no inspect.'''
    x: int = 1

assert 'ast' not in sys.modules, 'inspect was loaded'
assert Documented(2).x == 2

@dataclasses.dataclass
class Undocumented:
    x: int = 1

# inspect loaded on first use, and is the real one from then on.
assert Undocumented.__doc__ == 'Undocumented(x: int = 1)'
import inspect
assert inspect.signature(Undocumented) is not None
assert 'logging' not in sys.modules
print('ok')
"""


def test_stand_ins_in_a_fresh_process():
    proc = subprocess.run([sys.executable, '-c', STAND_IN],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout == 'ok\n', proc.stderr
    assert ' DEBUG m via stand-in\n' in proc.stderr


def test_nothing_replaced_when_already_loaded():
    assert 'oslo_log' in sys.modules or __import__('oslo_log')
    assert not fast_start.install_logging(fast_start.Sink())
    assert not fast_start.defer_module('os')
