"""nova's contract on top of the handler chain: files mandatory, the rest
best-effort, decided per item in a single mount; an image that cannot be
opened fails the spawn only when files were asked for.

The chain is a stand-in for ``disk.api.inject_data`` that writes with the
real per-item injector into an in-memory guest (no nova, no root).
"""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk.files import appliance
from nova_ksm_inject.privsep import client
from nova_ksm_inject.virt.libvirt import injection
from tests.unit.disk.fake_guestfs import FakeGuestFS

FILES = [('/etc/motd', b'hi\n')]
SHADOW = b'root:*:19000:0:99999:7:::\n'


class Chain:
    """Records every call; mounts an in-memory guest once per call, or
    fails to open the image with ``setup_error``."""

    def __init__(self, setup_error=None, shadow=SHADOW):
        self.setup_error = setup_error
        self.calls = []
        self.guest = FakeGuestFS()
        self.guest.add('/etc', 'dir', mode=0o755)
        if shadow is not None:
            self.guest.add('/etc/shadow', data=shadow, mode=0o640)

    def __call__(self, path, request, fmt=None, partition=0,
                 handler_names=None):
        self.calls.append({'path': path, 'request': request, 'fmt': fmt,
                           'partition': partition,
                           'handler_names': handler_names})
        if self.setup_error:
            raise self.setup_error
        items = inject.inject_data(appliance.GuestfsFiles(self.guest),
                                   request, image_desc=path)
        return api.InjectionResult(image=None, handler='fake', items=items)

    def data(self, path):
        node = self.guest.nodes.get(path)
        return node and node['data']


def request(**overrides):
    values = dict(key='ssh-ed25519 AAAA lab', net='auto eth0\n',
                  metadata={'a': 'b'}, admin_password='pw', files=FILES)
    values.update(overrides)
    return inject.InjectionRequest(**values)


def inject_with(chain, req, **kwargs):
    return injection.inject('/disk', 'qcow2', 2, 'img-1', req,
                            inject_data=chain, **kwargs)


def test_everything_in_one_call_when_all_succeeds():
    chain = Chain()
    assert inject_with(chain, request(), handler_names=['qsd']) == []
    [call] = chain.calls
    assert (call['path'], call['fmt'], call['partition'],
            call['handler_names']) == ('/disk', 'qcow2', 2, ['qsd'])
    # Whatever the caller built, nova's rule decides what is mandatory.
    assert call['request'].mandatory == injection.MANDATORY == ('files',)
    assert chain.data('/etc/motd') == b'hi\n'
    assert chain.data('/etc/network/interfaces') == b'auto eth0\n'
    assert chain.data('/meta.js') == b'{"a": "b"}'
    assert b'ssh-ed25519 AAAA lab' in chain.data('/root/.ssh/authorized_keys')
    assert chain.data('/etc/shadow').startswith(b'root:$6$')


def test_best_effort_item_fails_alone_in_the_same_mount(caplog):
    chain = Chain(shadow=None)
    ignored = inject_with(chain, request())
    assert [item for item, _reason in ignored] == ['admin_password']
    assert 'no /etc/shadow' in ignored[0][1]
    assert len(chain.calls) == 1
    assert chain.data('/etc/motd') == b'hi\n'
    assert chain.data('/meta.js') == b'{"a": "b"}'
    assert 'Ignoring error injecting admin_password' in caplog.text


def test_invalid_best_effort_item_is_skipped_and_the_rest_written():
    chain = Chain()
    ignored = inject_with(chain, request(key='line1\nline2'))
    assert [item for item, _reason in ignored] == ['key']
    assert len(chain.calls) == 1
    assert chain.data('/root/.ssh/authorized_keys') is None
    assert chain.data('/etc/motd') == b'hi\n'


def test_failed_file_raises():
    chain = Chain()
    with pytest.raises(exception.GuestPathRefused, match='not a regular'):
        inject_with(chain, request(files=[('/etc', b'x')]))


def test_image_not_opened_raises_when_files_requested():
    chain = Chain(setup_error=exception.NoHandlerMounted('/disk', []))
    with pytest.raises(exception.NoHandlerMounted):
        inject_with(chain, request())


def test_image_not_opened_is_ignored_without_files(caplog):
    err = exception.NoHandlerMounted('/disk', [('loop', 'no loop driver')])
    chain = Chain(setup_error=err)
    ignored = inject_with(chain, request(files=[]))
    assert len(chain.calls) == 1
    assert ignored == [(item, str(err)) for item in
                       ('key', 'net', 'metadata', 'admin_password')]
    assert 'Ignoring error injecting data into image img-1' in caplog.text


def test_setup_failed_follows_the_mandatory_items():
    err = exception.ImageRefused(path='/disk', reason='an rbd disk')
    with pytest.raises(exception.ImageRefused):
        injection.setup_failed(request(mandatory=('files',)), err, 'img-1')
    assert injection.setup_failed(request(files=[], mandatory=('files',)),
                                  err, 'img-1')[0] == ('key', str(err))


@pytest.fixture
def privileged_side(monkeypatch, conf):
    """The real caller's side (api.inject_data) with a stand-in for the
    privileged one; records the jobs it receives."""
    jobs = []

    def inject_image(job, conf):
        jobs.append(job)
        items = Chain()('/disk', inject.InjectionRequest.from_dict(
            job['request']))
        return {'image': {'path': '/disk', 'format': 'raw',
                          'virtual_size': 1, 'backing_chain': []},
                'handler': 'loop', 'attempts': [],
                'items': [i.to_dict() for i in items.items]}
    monkeypatch.setattr(client, 'inject_image', inject_image)
    return jobs


def test_invalid_file_raises_before_opening_the_image(privileged_side):
    with pytest.raises(exception.GuestPathRefused):
        injection.inject('/disk', 'raw', 0, 'img-1',
                         request(files=[('relative', b'x')]))
    assert privileged_side == []


def test_files_mandatory_crosses_to_the_privileged_side(privileged_side):
    ignored = injection.inject('/disk', 'raw', 0, 'img-1',
                               request(key='line1\nline2'))
    [job] = privileged_side
    assert job['request']['mandatory'] == ['files']
    assert [item for item, _reason in ignored] == ['key']
