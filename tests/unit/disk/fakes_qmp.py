"""Stand-ins for sandboxed helpers, for unit tests without bubblewrap.

:class:`Helpers` starts commands through the real
:meth:`~nova_ksm_inject.disk.sandbox.Sandbox.start`, with a stand-in
``bwrap`` first on PATH that drops the options up to ``--`` and runs the
rest: the descriptors handed over (``/proc/self/fd/N``) really reach the
command, and its pipes are the ones the code under test reads.
:data:`QMP_DAEMON` is a qemu-storage-daemon that only has its monitor.
:func:`unavailable` is a handler's complaint about a missing tool.
"""

import os
import shutil
import sys

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import sandbox

FAKE_BWRAP = ('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done\n'
              'shift\nexec "$@"\n')

#: argv: MODE LOG /proc/self/fd/N. A QMP monitor on descriptor N that
#: logs ``up``, then each command, to LOG; on ``quit`` it closes the
#: monitor and exits 0 (``obey``, as qemu does), or answers and lives on
#: (``ignore``); or it never greets (``mute``).
QMP_DAEMON = '''
import json, socket, sys, time
mode, log, monitor = sys.argv[1:4]
sock = socket.socket(fileno=int(monitor.rsplit('/', 1)[1]))
f = sock.makefile('rwb')
with open(log, 'a') as out:
    out.write('up\\n')
if mode == 'mute':
    time.sleep(60)
f.write(b'{"QMP": {"version": {}, "capabilities": []}}\\n'); f.flush()
for line in f:
    command = json.loads(line)['execute']
    with open(log, 'a') as out:
        out.write(command + '\\n')
    if command == 'quit' and mode == 'obey':
        f.close(); sock.close()
        sys.exit(0)
    f.write(b'{"return": {}}\\n'); f.flush()
time.sleep(60)
'''


class _Unprivileged:
    """``os`` but for the effective uid."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def geteuid():
        return 1000


class Helpers:
    """Starts sandboxed helpers through a stand-in bwrap; kills them all
    at :meth:`close`.

    The sandbox module sees an unprivileged caller (its ``os.geteuid``
    is 1000) so that it drops no ids: the stand-in runs as whoever runs
    the tests, and everything else still sees the real uid.
    """

    def __init__(self, tmp_path, monkeypatch, conf):
        bindir = tmp_path / 'fake-bin'
        bindir.mkdir()
        (bindir / 'bwrap').write_text(FAKE_BWRAP)
        (bindir / 'bwrap').chmod(0o755)
        monkeypatch.setenv('PATH', '%s:%s' % (bindir, os.environ['PATH']))
        monkeypatch.setattr(sandbox, 'os', _Unprivileged())
        self.conf = conf
        self.started = []

    def start(self, *cmd, fds=()):
        """Start ``cmd`` with the paths of ``fds`` as handed over appended
        to it."""
        box = sandbox.Sandbox(self.conf, '/state/work/1-abc')
        proc = box.start(*cmd, *[box.pass_fd(fd) for fd in fds])
        self.started.append(proc)
        return proc

    def python(self, code, *args, fds=()):
        return self.start(sys.executable, '-c', code, *args, fds=fds)

    def close(self):
        for proc in self.started:
            sandbox.kill(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def unavailable(handler, monkeypatch, missing):
    """Why ``handler.check_host()`` fails when ``missing`` is the one tool
    ``shutil.which`` does not find."""
    monkeypatch.setattr(shutil, 'which',
                        lambda tool: None if tool == missing else '/x')
    with pytest.raises(exception.HandlerUnavailable) as err:
        handler.check_host()
    return str(err.value)
