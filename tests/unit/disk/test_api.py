"""The handler chain: order, skips, fall-through, unwinding, errors."""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk.handlers import base

RAW = disk_image.ImageInfo(path='/images/disk.raw', format='raw',
                           virtual_size=2 ** 30, backing_chain=())
QCOW2 = disk_image.ImageInfo(path='/images/disk.qcow2', format='qcow2',
                             virtual_size=2 ** 30, backing_chain=())


class FakeHandler(base.ImageHandler):
    """Records what the chain asks; behaviour set per instance."""

    def __init__(self, name, cow=False, formats=('raw',), unavailable=None,
                 fail=None, log=None):
        super().__init__(conf=None)
        self.name = name
        self.cow = cow
        self.formats = frozenset(formats)
        self.unavailable = unavailable
        self.fail = fail
        self.log = log if log is not None else []

    def check_host(self):
        if self.unavailable:
            raise exception.HandlerUnavailable(reason=self.unavailable)

    def mount(self, image, partition, journal):
        journal.callback(self.log.append, 'undo-a:%s' % self.name)
        self.log.append('mount:%s' % self.name)
        if self.fail:
            raise self.fail
        journal.callback(self.log.append, 'undo-b:%s' % self.name)
        return 'files-of-%s' % self.name


@pytest.fixture
def chain(monkeypatch, conf):
    """Install fake handlers and a fake image/injector into the chain."""
    state = {'handlers': [], 'image': RAW, 'injected_into': []}
    monkeypatch.setattr(api, 'load_handlers',
                        lambda names, conf=None: state['handlers'])
    monkeypatch.setattr(api.disk_image, 'inspect_image',
                        lambda path, fmt=None, trusted_dirs=None:
                        state['image'])

    def fake_inject(files, request, image_desc='', conf=None):
        state['injected_into'].append(files)
        return ['key']
    monkeypatch.setattr(api.inject, 'inject_data', fake_inject)
    return state


def request():
    return inject.InjectionRequest(key='ssh-ed25519 AAAA test')


def test_first_working_handler_is_used_in_order(chain):
    log = []
    chain['handlers'] = [FakeHandler('a', log=log), FakeHandler('b', log=log)]
    result = api.inject_data('/images/disk.raw', request(), use_cow=False)
    assert result.handler == 'a'
    assert chain['injected_into'] == ['files-of-a']
    assert log == ['mount:a', 'undo-b:a', 'undo-a:a']  # reverse unwinding
    assert [(a.handler, a.outcome) for a in result.attempts] == [
        ('a', 'used')]


def test_non_cow_handler_skipped_when_cow_needed(chain):
    chain['handlers'] = [FakeHandler('loop'), FakeHandler('qsd', cow=True)]
    result = api.inject_data('/images/disk.raw', request(), use_cow=True)
    assert result.handler == 'qsd'
    skipped = result.attempts[0]
    assert (skipped.handler, skipped.outcome) == ('loop', 'skipped')
    assert 'copy-on-write' in skipped.reason


def test_qcow2_needs_cow_even_when_use_cow_is_off(chain):
    chain['image'] = QCOW2
    chain['handlers'] = [FakeHandler('loop'),
                         FakeHandler('qsd', cow=True,
                                     formats=('raw', 'qcow2'))]
    result = api.inject_data('/images/disk.qcow2', request(), use_cow=False)
    assert result.handler == 'qsd'
    assert result.attempts[0].outcome == 'skipped'


def test_inspect_skips_handlers_that_cannot(chain):
    chain['handlers'] = [FakeHandler('loop')]
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data('/images/disk.raw', request(), partition=-1,
                        use_cow=False)
    assert 'cannot inspect' in str(err.value)


def test_failures_fall_through_and_are_unwound(chain):
    log = []
    chain['handlers'] = [
        FakeHandler('nbd', cow=True, unavailable='no nbd driver', log=log),
        FakeHandler('qsd', cow=True, log=log,
                    fail=exception.HandlerFailed(reason='export timed out')),
        FakeHandler('guestfs', cow=True, log=log)]
    result = api.inject_data('/images/disk.raw', request(), use_cow=True)
    assert result.handler == 'guestfs'
    assert [(a.handler, a.outcome, a.reason) for a in result.attempts] == [
        ('nbd', 'unavailable', 'no nbd driver'),
        ('qsd', 'failed', 'export timed out'),
        ('guestfs', 'used', None)]
    # qsd's partial mount was undone before guestfs started
    assert log.index('undo-a:qsd') < log.index('mount:guestfs')


def test_unexpected_exception_in_a_handler_falls_through(chain):
    chain['handlers'] = [FakeHandler('broken', fail=OSError(5, 'I/O error')),
                         FakeHandler('loop')]
    result = api.inject_data('/images/disk.raw', request(), use_cow=False)
    assert result.handler == 'loop'
    assert 'I/O error' in result.attempts[0].reason


def test_no_handler_lists_every_reason(chain):
    chain['handlers'] = [
        FakeHandler('loop'),
        FakeHandler('nbd', cow=True, unavailable='no nbd driver; modprobe'),
    ]
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data('/images/disk.raw', request(), use_cow=True)
    message = str(err.value)
    assert 'loop: cannot do copy-on-write' in message
    assert 'nbd: no nbd driver; modprobe' in message
    assert '\n' not in message


def test_injection_error_does_not_fall_through_but_unwinds(chain,
                                                          monkeypatch):
    log = []
    chain['handlers'] = [FakeHandler('a', log=log), FakeHandler('b', log=log)]

    def refuse(files, request, image_desc='', conf=None):
        raise exception.GuestPathRefused(path='/x', reason='escapes')
    monkeypatch.setattr(api.inject, 'inject_data', refuse)
    with pytest.raises(exception.GuestPathRefused):
        api.inject_data('/images/disk.raw', request(), use_cow=False)
    assert log == ['mount:a', 'undo-b:a', 'undo-a:a']


def test_ctrl_c_during_mount_unwinds_and_propagates(chain):
    log = []
    chain['handlers'] = [FakeHandler('a', log=log, fail=KeyboardInterrupt()),
                         FakeHandler('b', log=log)]
    with pytest.raises(KeyboardInterrupt):
        api.inject_data('/images/disk.raw', request(), use_cow=False)
    assert log == ['mount:a', 'undo-a:a']


def test_real_entry_points_load_in_configured_order(conf):
    handlers = api.load_handlers(['qsd', 'loop', 'guestfs', 'nbd'])
    assert [h.name for h in handlers] == ['qsd', 'loop', 'guestfs', 'nbd']
    assert all(isinstance(h, base.ImageHandler) for h in handlers)


def test_unknown_handler_names_the_valid_ones(conf):
    with pytest.raises(exception.UnknownHandler) as err:
        api.load_handlers(['loop', 'nbdd'])
    message = str(err.value)
    assert 'nbdd' in message
    assert 'loop, nbd, guestfs, qsd' in message or all(
        n in message for n in ('guestfs', 'loop', 'nbd', 'qsd'))
    assert 'nova_ksm_inject.image_handlers' in message


def test_empty_handler_list_is_a_config_error(conf):
    with pytest.raises(exception.UnknownHandler):
        api.validate_handler_names([])
