"""What lets the hook's cached path start in a few tens of milliseconds.

libvirt waits for the hook at each lifecycle event of every guest, and a
Python process that imports oslo.log, oslo.config (0.15 s) or even only
the standard logging module (10 ms) and ``inspect`` (10 ms, through
``dataclasses``) spends most of its life importing. On the cached path
(:mod:`nova_ksm_inject.ksm.hook.settings_cache`):

* :func:`install_logging` puts a stand-in for ``oslo_log.log`` in
  ``sys.modules`` whose loggers write the same lines the full path's
  stdlib handler writes (see ``nova_ksm_inject.cmd.hook``). The modules the
  hook runs only call ``getLogger`` and the level methods; a unit test
  runs them through it.
* :func:`defer_module` makes a module load on first attribute access:
  ``dataclasses`` imports ``inspect`` but uses it only for classes without
  a docstring, which the hook's modules do not define.

Both only apply when the module is not loaded yet, so in a process that
already has oslo.log (the tests) nothing changes.
"""

import os
import sys
import time

LEVELS = {'DEBUG': 10, 'INFO': 20, 'WARNING': 30, 'ERROR': 40}
SYSLOG_PRIORITY = {'DEBUG': 7, 'INFO': 6, 'WARNING': 4, 'ERROR': 3}
SYSLOG_FACILITY_USER = 1


class Sink(object):
    """Where lines go: a file, the syslog socket, or standard error."""

    def __init__(self, path=None, syslog_socket=None, prog='hook',
                 level='INFO'):
        self.path = path
        self.syslog_socket = syslog_socket
        self.prog = prog
        self.level = LEVELS[level]

    def write(self, levelname, name, message):
        if self.syslog_socket:
            self._syslog(levelname, '%s %s' % (name, message))
            return
        now = time.time()
        line = '%s,%03d %d %s %s %s\n' % (
            time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now)),
            int(now * 1000) % 1000, os.getpid(), levelname, name, message)
        if self.path:
            with open(self.path, 'a') as f:
                f.write(line)
        else:
            sys.stderr.write(line)

    def _syslog(self, levelname, text):
        import socket
        priority = SYSLOG_FACILITY_USER * 8 + SYSLOG_PRIORITY[levelname]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(('<%d>%s: %s' % (priority, self.prog, text)).encode(),
                        self.syslog_socket)


class Logger(object):
    """The subset of a logger the hook's modules call."""

    def __init__(self, name, sink):
        self.name = name
        self.sink = sink

    def isEnabledFor(self, level):  # noqa: N802 (the logging API's name)
        return level >= self.sink.level

    def _log(self, levelname, msg, args, exc_info=False):
        if LEVELS[levelname] < self.sink.level:
            return
        try:
            message = msg % args if args else str(msg)
        except (TypeError, ValueError):
            message = '%s %r' % (msg, args)
        if exc_info:
            import traceback
            message += '\n' + traceback.format_exc().rstrip()
        self.sink.write(levelname, self.name, message)

    def debug(self, msg, *args, exc_info=False, **kwargs):
        self._log('DEBUG', msg, args, exc_info)

    def info(self, msg, *args, exc_info=False, **kwargs):
        self._log('INFO', msg, args, exc_info)

    def warning(self, msg, *args, exc_info=False, **kwargs):
        self._log('WARNING', msg, args, exc_info)

    def error(self, msg, *args, exc_info=False, **kwargs):
        self._log('ERROR', msg, args, exc_info)

    def exception(self, msg, *args, **kwargs):
        self._log('ERROR', msg, args, exc_info=True)


def install_logging(sink):
    """Make ``from oslo_log import log as logging`` give :class:`Logger`s
    writing to ``sink``, unless the real oslo.log is already loaded."""
    import types
    if 'oslo_log' in sys.modules:
        return False
    log = types.ModuleType('oslo_log.log')
    log.getLogger = lambda name=None: Logger(name or 'root', sink)
    package = types.ModuleType('oslo_log')
    package.__path__ = []
    package.log = log
    sys.modules['oslo_log'] = package
    sys.modules['oslo_log.log'] = log
    return True


def defer_module(name):
    """Register a stand-in for module ``name`` that imports the real one
    on first attribute access (PEP 562) and from then on behaves as it."""
    import types
    if name in sys.modules:
        return False
    proxy = types.ModuleType(name, 'Loaded on first use by the KSM hook.')

    def load(attr):
        if sys.modules.get(name) is proxy:
            import importlib
            del sys.modules[name]
            real = importlib.import_module(name)
            proxy.__dict__.update(
                (k, v) for k, v in vars(real).items() if k != '__getattr__')
        return getattr(sys.modules[name], attr)

    proxy.__getattr__ = load
    sys.modules[name] = proxy
    return True
