"""A minimal QMP client: enough to stop qemu-storage-daemon cleanly.

QMP is qemu's JSON control protocol on a UNIX socket: a greeting, then
``qmp_capabilities``, then one JSON object per line, where command replies
(``return`` or ``error``) and asynchronous events (``event``) interleave.
Only the synchronous subset the ``qsd`` handler needs is implemented; the
full client (``qemu.qmp`` on PyPI) is asyncio-based and not needed here.
"""

import json
import os
import socket
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class QmpError(Exception):
    """The monitor answered with an error, closed early or timed out."""


# sizeof(sun_path) - 1: longer socket paths cannot be connected to directly.
_SUN_PATH_MAX = 107


def _connect(sock, path):
    """Connect ``sock`` to ``path``, even past the UNIX path size limit:
    through ``/proc/self/fd/<dir fd>/<name>``."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        sock.connect(path)
        return
    dir_fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY |
                     os.O_CLOEXEC)
    try:
        sock.connect('/proc/self/fd/%d/%s' % (dir_fd,
                                              os.path.basename(path)))
    finally:
        os.close(dir_fd)


class QmpClient:
    """Synchronous QMP connection; use as a context manager.

    :param path: the monitor's UNIX socket.
    :param timeout: seconds allowed to each wait (connect, reply, event).
    :param sock: an already connected socket (one end of a socketpair
        whose other end the daemon got as ``--chardev socket,fd=N``);
        ``path`` then only names it in messages.
    :raises OSError: the socket cannot be reached.
    :raises QmpError: no greeting or capabilities negotiation failed.
    """

    def __init__(self, path, timeout=5.0, sock=None):
        self.path = path
        self.timeout = timeout
        self._events = []
        self._sock = sock or socket.socket(socket.AF_UNIX,
                                           socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            if sock is None:
                _connect(self._sock, path)
            self._reader = self._sock.makefile('rb')
            if 'QMP' not in self._receive():
                raise QmpError('%s did not greet with QMP' % path)
            self.execute('qmp_capabilities')
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._sock is not None:
            # The reader holds the descriptor too: close both.
            if getattr(self, '_reader', None) is not None:
                self._reader.close()
            self._sock.close()
            self._sock = None

    def _receive(self):
        try:
            line = self._reader.readline()
        except socket.timeout as err:
            raise QmpError('no answer on %s within %.1f s'
                           % (self.path, self.timeout)) from err
        if not line:
            raise QmpError('%s closed the connection' % self.path)
        try:
            return json.loads(line)
        except ValueError as err:
            raise QmpError('bad QMP message on %s: %r'
                           % (self.path, line[:200])) from err

    def execute(self, command, **arguments):
        """Run ``command``; return its ``return`` value.

        Events that arrive first are kept for :meth:`wait_event`.

        :raises QmpError: the command failed (with qemu's description).
        """
        message = {'execute': command}
        if arguments:
            message['arguments'] = arguments
        self._sock.sendall(json.dumps(message).encode() + b'\n')
        while True:
            reply = self._receive()
            if 'event' in reply:
                self._events.append(reply)
            elif 'error' in reply:
                raise QmpError('%s failed: %s' % (
                    command, reply['error'].get('desc', reply['error'])))
            elif 'return' in reply:
                return reply['return']

    def wait_event(self, name, timeout=None):
        """Wait for event ``name``; return it.

        :raises QmpError: it did not come within ``timeout`` seconds.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for event in self._events:
                if event['event'] == name:
                    self._events.remove(event)
                    return event
            if time.monotonic() >= deadline:
                raise QmpError('no %s event on %s' % (name, self.path))
            message = self._receive()
            if 'event' in message:
                self._events.append(message)

    def quit(self):
        """Ask qemu to exit and wait until it has closed the monitor.

        qemu closes its monitor after it has closed every block node, so
        the end of the connection means the images are flushed, closed and
        unlocked. The reply to ``quit`` may be lost in the race with that
        close, so it is not required.

        :raises QmpError: the socket stayed open for ``timeout`` seconds.
        """
        self._sock.sendall(b'{"execute": "quit"}\n')
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                if not self._reader.readline():
                    return
            except socket.timeout:
                break
            except OSError:  # a reset is as good as a close here
                return
        raise QmpError('%s still open %.1f s after quit'
                       % (self.path, self.timeout))
