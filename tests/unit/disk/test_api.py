"""The caller's side of injection: checks, the job it sends, the result it
gets back, and the whole way through privsep as nova-compute takes it.

The handler chain itself is tested in test_chain.py.
"""

import json
import os

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk.files import appliance
from nova_ksm_inject.disk.handlers import base
from nova_ksm_inject.disk.handlers import loader
from nova_ksm_inject.privsep import client
from tests.unit import fake_privsep
from tests.unit.disk.fake_guestfs import FakeGuestFS

KEY = 'ssh-ed25519 AAAA test'
RESULT = {
    'image': {'path': '/images/disk.raw', 'format': 'raw',
              'virtual_size': 1024, 'backing_chain': []},
    'handler': 'qsd',
    'attempts': [{'handler': 'loop', 'outcome': 'skipped',
                  'reason': 'cannot do copy-on-write', 'seconds': 0.0},
                 {'handler': 'qsd', 'outcome': 'used', 'reason': None,
                  'seconds': 0.5}],
    'items': [{'item': 'key', 'group': 'key', 'status': 'written',
               'reason': None},
              {'item': 'admin_password', 'group': 'admin_password',
               'status': 'failed', 'reason': 'no /etc/shadow'},
              {'item': 'file /a', 'group': 'files', 'status': 'written',
               'reason': None}]}


@pytest.fixture
def sent(monkeypatch, conf):
    """Stand in for the privileged side; records the jobs sent to it."""
    jobs = []

    def inject_image(job, conf):
        fake_privsep.over_the_wire(job)  # plain data only
        jobs.append(job)
        return fake_privsep.over_the_wire(RESULT)
    monkeypatch.setattr(client, 'inject_image', inject_image)
    return jobs


def test_job_is_plain_data_with_every_field(sent, conf, tmp_path,
                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf.config(img_handlers=['qsd', 'loop'])
    api.inject_data('disk', inject.InjectionRequest(
        key=KEY, files=[('/a', 'text')], mandatory=('files',)),
        fmt='qcow2', partition=2)
    assert sent == [{
        'image': str(tmp_path / 'disk'), 'format': 'qcow2', 'partition': 2,
        'handlers': ['qsd', 'loop'], 'use_cow': None, 'trusted_dirs': None,
        'request': {'key': KEY, 'net': None, 'metadata': None,
                    'admin_password': None, 'mandatory': ['files'],
                    'files': [['/a', b'text']]}}]


def test_explicit_handlers_cow_and_trusted_dirs_are_sent(sent, conf):
    api.inject_data('/images/disk', inject.InjectionRequest(key=KEY),
                    handler_names=['guestfs'], use_cow=True,
                    trusted_dirs=['/var/lib/nova/instances/_base'])
    job = sent[0]
    assert (job['handlers'], job['use_cow'], job['trusted_dirs']) == (
        ['guestfs'], True, ['/var/lib/nova/instances/_base'])


def test_result_per_item(sent, conf):
    result = api.inject_data('/images/disk.raw', inject.InjectionRequest(
        key=KEY, admin_password='pw', files=[('/a', b'')]))
    assert result.handler == 'qsd'
    assert (result.image.path, result.image.format) == ('/images/disk.raw',
                                                        'raw')
    assert [(a.handler, a.outcome) for a in result.attempts] == [
        ('loop', 'skipped'), ('qsd', 'used')]
    assert result.injected == ['key', 'file /a']
    assert result.failed == [('admin_password', 'no /etc/shadow')]
    assert [i.group for i in result.items] == ['key', 'admin_password',
                                               'files']


@pytest.mark.parametrize('asked, configured', [
    (['loop', 'nbdd'], ['loop']), (None, ['loop', 'nbdd']), (None, [])])
def test_handler_names_checked_before_anything(sent, conf, asked,
                                               configured):
    conf.config(img_handlers=configured)
    with pytest.raises(exception.UnknownHandler):
        api.inject_data('/images/disk', inject.InjectionRequest(key=KEY),
                        handler_names=asked)
    assert sent == []


def test_mandatory_item_over_its_limit_fails_before_the_job(sent, conf):
    conf.config(group='inject', max_injected_files=1)
    request = inject.InjectionRequest(files=[('/a', b''), ('/b', b'')])
    with pytest.raises(exception.InjectionLimit, match='max_injected_files'):
        api.inject_data('/images/disk', request)
    assert sent == []


def test_best_effort_item_over_its_limit_is_left_to_the_job(sent, conf):
    request = inject.InjectionRequest(key='one\ntwo', files=[('/a', b'')],
                                      mandatory=('files',))
    api.inject_data('/images/disk', request)
    assert sent[0]['request']['key'] == 'one\ntwo'


def test_cleanup_returns_the_sweep_results(monkeypatch, conf):
    monkeypatch.setattr(client, 'sweep_journals',
                        lambda conf: [{'record': 'r'}])
    assert api.cleanup() == [{'record': 'r'}]


def test_real_entry_points_load_in_configured_order(conf):
    handlers = api.load_handlers(['qsd', 'loop', 'guestfs', 'nbd'])
    assert [h.name for h in handlers] == ['qsd', 'loop', 'guestfs', 'nbd']
    assert all(isinstance(h, base.ImageHandler) for h in handlers)


def test_unknown_handler_names_the_valid_ones(conf):
    with pytest.raises(exception.UnknownHandler) as err:
        api.load_handlers(['loop', 'nbdd'])
    message = str(err.value)
    assert 'nbdd' in message
    assert all(n in message for n in ('guestfs', 'loop', 'nbd', 'qsd'))
    assert 'nova_ksm_inject.image_handlers' in message


def test_empty_handler_list_is_a_config_error(conf):
    with pytest.raises(exception.UnknownHandler):
        api.validate_handler_names([])


def test_describe_failure():
    assert api.describe_failure(exception.ImageNotFound(path='/x')) == (
        'Image /x does not exist or is not a regular file.')
    assert api.describe_failure(OSError(5, 'I/O')) == 'OSError: [Errno 5] I/O'


# --- all the way, as root and through privsep --------------------------

class GuestHandler(base.ImageHandler):
    """Mounts nothing: the guest is an in-memory libguestfs stand-in."""

    cow = True

    def __init__(self, guest, seen):
        super().__init__(conf=None)
        self.name = 'loop'
        self.guest = guest
        self.seen = seen

    def check_host(self):
        pass

    def mount(self, image, partition, journal):
        self.seen.append((image.path, image.source))
        return appliance.GuestfsFiles(self.guest)


@pytest.fixture
def host(monkeypatch, conf, tmp_path):
    """An instance disk, a fake qemu-img, and a handler writing into an
    in-memory guest; ``seen`` records what the handler was given."""
    inst = tmp_path / 'instances'
    (inst / 'uuid').mkdir(parents=True)
    disk = inst / 'uuid' / 'disk'
    disk.write_bytes(b'\0' * 1024)
    conf.config(group='inject', image_dirs=[str(inst)])
    guest = FakeGuestFS()
    guest.add('/etc', 'dir', mode=0o755)
    seen = []
    monkeypatch.setattr(loader, 'load', lambda names, conf: [
        GuestHandler(guest, seen)])
    monkeypatch.setattr(utils, 'execute', lambda *cmd, **kw: (json.dumps(
        {'format': 'raw', 'virtual-size': 1024}), ''))
    return {'disk': str(disk), 'inst': inst, 'guest': guest, 'seen': seen}


@pytest.mark.parametrize('caller', ['as_root', 'privsep_wire'])
def test_injection_end_to_end(host, conf, request, caller):
    request.getfixturevalue(caller)
    result = api.inject_data(host['disk'], inject.InjectionRequest(
        metadata={'role': 'lab'}, admin_password='pw',
        files=[('/etc/motd', b'hi\n')], mandatory=('files',)),
        handler_names=['loop'])
    assert host['guest'].nodes['/etc/motd']['data'] == b'hi\n'
    assert json.loads(host['guest'].nodes['/meta.js']['data']) == {
        'role': 'lab'}
    assert result.injected == ['metadata', 'file /etc/motd']
    assert [item for item, _reason in result.failed] == ['admin_password']
    assert (result.handler, result.image.path) == ('loop', host['disk'])
    [(path, source)] = host['seen']
    assert path == host['disk'] and source.startswith('/proc/')


def test_unprivileged_caller_goes_through_the_inject_context(
        host, conf, privsep_wire):
    api.inject_data(host['disk'], inject.InjectionRequest(
        files=[('/etc/motd', b'hi\n')]), handler_names=['loop'])
    assert privsep_wire.calls == [
        'nova_ksm_inject.privsep.disk.inject_image']


def test_unprivileged_caller_is_confined_to_image_dirs(host, conf,
                                                       tmp_path,
                                                       privsep_wire):
    other = tmp_path / 'elsewhere'
    other.write_bytes(b'\0' * 1024)
    os.symlink(other, host['inst'] / 'uuid' / 'link')
    for path in (str(other), str(host['inst'] / 'uuid' / 'link')):
        with pytest.raises(exception.ImageRefused):
            api.inject_data(path, inject.InjectionRequest(
                files=[('/etc/motd', b'hi\n')]), handler_names=['loop'])
    assert host['seen'] == []


def test_root_caller_is_not_confined(host, conf, tmp_path, as_root):
    other = tmp_path / 'elsewhere'
    other.write_bytes(b'\0' * 1024)
    result = api.inject_data(str(other), inject.InjectionRequest(
        files=[('/etc/motd', b'hi\n')]), handler_names=['loop'])
    assert result.image.path == str(other)


def test_no_handler_mounted_keeps_its_message_through_privsep(
        host, conf, monkeypatch, privsep_wire):
    monkeypatch.setattr(loader, 'load', lambda names, conf: [])
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(host['disk'], inject.InjectionRequest(
            files=[('/etc/motd', b'hi\n')]), handler_names=['loop'])
    assert str(err.value) == ('No image handler could mount %s: no handler '
                              'configured' % host['disk'])
