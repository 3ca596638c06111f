"""The QMP client against a scripted monitor on a socketpair-like server."""

import json
import socket
import threading

import pytest

from nova_ksm_inject.disk import qmp

GREETING = {'QMP': {'version': {}, 'capabilities': []}}


class Monitor:
    """A scripted QMP peer: answers each command from ``script``."""

    def __init__(self, path, script, close_after=None):
        self.received = []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(1)
        self.script = script
        self.close_after = close_after
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.server.accept()
        f = conn.makefile('rwb')
        self._send(f, GREETING)
        for line in f:
            command = json.loads(line)
            self.received.append(command)
            for message in self.script.get(command['execute'], []):
                self._send(f, message)
            if command['execute'] == self.close_after:
                break
        conn.close()

    @staticmethod
    def _send(f, message):
        f.write(json.dumps(message).encode() + b'\n')
        f.flush()


@pytest.fixture
def sock(tmp_path):
    return str(tmp_path / 'qmp.sock')


def test_capabilities_then_command_returns_value(sock):
    monitor = Monitor(sock, {'qmp_capabilities': [{'return': {}}],
                             'query-name': [{'return': {'name': 'x'}}]})
    with qmp.QmpClient(sock, timeout=2) as client:
        assert client.execute('query-name') == {'name': 'x'}
    assert [c['execute'] for c in monitor.received] == [
        'qmp_capabilities', 'query-name']


def test_error_reply_raises_with_qemu_description(sock):
    Monitor(sock, {'qmp_capabilities': [{'return': {}}],
                   'block-export-del': [{'error': {
                       'class': 'GenericError', 'desc': 'no export x'}}]})
    with qmp.QmpClient(sock, timeout=2) as client:
        with pytest.raises(qmp.QmpError, match='no export x'):
            client.execute('block-export-del', id='x')


def test_events_before_the_reply_are_kept(sock):
    event = {'event': 'BLOCK_EXPORT_DELETED', 'data': {'id': 'e'}}
    Monitor(sock, {'qmp_capabilities': [{'return': {}}],
                   'block-export-del': [event, {'return': {}}]})
    with qmp.QmpClient(sock, timeout=2) as client:
        client.execute('block-export-del', id='e')
        assert client.wait_event('BLOCK_EXPORT_DELETED') == event


def test_quit_returns_when_the_monitor_closes(sock):
    monitor = Monitor(sock, {'qmp_capabilities': [{'return': {}}],
                             'quit': [{'return': {}}]}, close_after='quit')
    with qmp.QmpClient(sock, timeout=2) as client:
        client.quit()
    assert monitor.received[-1] == {'execute': 'quit'}


def test_quit_times_out_when_the_monitor_stays_open(sock):
    Monitor(sock, {'qmp_capabilities': [{'return': {}}],
                   'quit': [{'return': {}}]})
    with qmp.QmpClient(sock, timeout=0.3) as client:
        with pytest.raises(qmp.QmpError, match='still open'):
            client.quit()


def test_no_monitor_is_an_oserror(sock):
    with pytest.raises(OSError):
        qmp.QmpClient(sock, timeout=0.3)
