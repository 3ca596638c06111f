"""The handler chain: order, skips, fall-through, unwinding, errors.

``chain.run`` is what the privileged side runs for one job; here with
stand-in handlers, a stand-in inspection and a stand-in injector.
"""

import os

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import chain as disk_chain
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk import job as disk_job
from nova_ksm_inject.disk.handlers import base
from nova_ksm_inject.disk.handlers import loader

RAW = disk_image.ImageInfo(path='/images/disk.raw', format='raw',
                           virtual_size=2 ** 30, backing_chain=())
QCOW2 = disk_image.ImageInfo(path='/images/disk.qcow2', format='qcow2',
                             virtual_size=2 ** 30, backing_chain=())
FAKE_NAMES = ('a', 'b', 'broken', 'guestfs', 'loop', 'nbd', 'qsd')


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
    state = {'handlers': [], 'image': RAW, 'injected_into': [],
             'inspected': [], 'loaded': []}
    monkeypatch.setattr(loader, 'available_handlers',
                        lambda: sorted(FAKE_NAMES))

    def load(names, conf):
        state['loaded'].append(list(names))
        return state['handlers']
    monkeypatch.setattr(disk_chain.handler_loader, 'load', load)

    def inspect(path, fmt=None, trusted_dirs=None, holder=None,
                within=None):
        state['inspected'].append({'path': path, 'fmt': fmt,
                                   'trusted_dirs': trusted_dirs,
                                   'held': holder is not None,
                                   'within': within})
        return state['image']
    monkeypatch.setattr(disk_chain.disk_image, 'inspect_image', inspect)

    def fake_inject(files, request, image_desc='', conf=None):
        state['injected_into'].append(files)
        return [inject.ItemResult('key', 'key', inject.WRITTEN)]
    monkeypatch.setattr(disk_chain.inject, 'inject_data', fake_inject)
    return state


def request():
    return inject.InjectionRequest(key='ssh-ed25519 AAAA test')


def run(chain, conf, path='/images/disk.raw', partition=0, use_cow=False,
        confined=False, trusted_dirs=None):
    names = [h.name for h in chain['handlers']] or ['loop']
    job = disk_job.build(path, request(), None, partition, names, use_cow,
                         trusted_dirs)
    return disk_chain.run(job, confined=confined, conf=conf.conf)


def outcomes(result):
    return [(a['handler'], a['outcome']) for a in result['attempts']]


def test_first_working_handler_is_used_in_order(chain, conf):
    log = []
    chain['handlers'] = [FakeHandler('a', log=log), FakeHandler('b', log=log)]
    result = run(chain, conf)
    assert result['handler'] == 'a'
    assert chain['loaded'] == [['a', 'b']]
    assert chain['injected_into'] == ['files-of-a']
    assert log == ['mount:a', 'undo-b:a', 'undo-a:a']  # reverse unwinding
    assert outcomes(result) == [('a', 'used')]
    assert result['items'] == [{'item': 'key', 'group': 'key',
                                'status': 'written', 'reason': None}]
    assert result['image'] == RAW.to_dict()


def test_nothing_is_left_in_the_state_dir(chain, conf):
    chain['handlers'] = [FakeHandler('a')]
    run(chain, conf)
    state_dir = conf.conf.inject.state_dir
    assert os.listdir(os.path.join(state_dir, 'journal')) == []
    assert os.listdir(os.path.join(state_dir, 'work')) == []


def test_non_cow_handler_skipped_when_cow_needed(chain, conf):
    chain['handlers'] = [FakeHandler('loop'), FakeHandler('qsd', cow=True)]
    result = run(chain, conf, use_cow=True)
    assert result['handler'] == 'qsd'
    skipped = result['attempts'][0]
    assert (skipped['handler'], skipped['outcome']) == ('loop', 'skipped')
    assert 'copy-on-write' in skipped['reason']


def test_use_cow_defaults_to_use_cow_images(chain, conf):
    conf.config(use_cow_images=True)
    chain['handlers'] = [FakeHandler('loop'), FakeHandler('qsd', cow=True)]
    assert run(chain, conf, use_cow=None)['handler'] == 'qsd'
    conf.config(use_cow_images=False)
    assert run(chain, conf, use_cow=None)['handler'] == 'loop'


def test_qcow2_needs_cow_even_when_use_cow_is_off(chain, conf):
    chain['image'] = QCOW2
    # The first handler opens qcow2 but cannot do copy-on-write: skipped
    # for that reason alone.
    chain['handlers'] = [FakeHandler('loop', formats=('raw', 'qcow2')),
                         FakeHandler('qsd', cow=True,
                                     formats=('raw', 'qcow2'))]
    result = run(chain, conf, path='/images/disk.qcow2', use_cow=False)
    assert result['handler'] == 'qsd'
    skipped = result['attempts'][0]
    assert (skipped['handler'], skipped['outcome'], skipped['reason']) == (
        'loop', 'skipped', 'cannot do copy-on-write (the image is qcow2)')


def test_inspect_skips_handlers_that_cannot(chain, conf):
    chain['handlers'] = [FakeHandler('loop')]
    with pytest.raises(exception.NoHandlerMounted) as err:
        run(chain, conf, partition=-1)
    assert 'cannot inspect' in str(err.value)


def test_failures_fall_through_and_are_unwound(chain, conf):
    log = []
    chain['handlers'] = [
        FakeHandler('nbd', cow=True, unavailable='no nbd driver', log=log),
        FakeHandler('qsd', cow=True, log=log,
                    fail=exception.HandlerFailed(reason='export timed out')),
        FakeHandler('guestfs', cow=True, log=log)]
    result = run(chain, conf, use_cow=True)
    assert result['handler'] == 'guestfs'
    assert [(a['handler'], a['outcome'], a['reason'])
            for a in result['attempts']] == [
        ('nbd', 'unavailable', 'no nbd driver'),
        ('qsd', 'failed', 'export timed out'),
        ('guestfs', 'used', None)]
    # qsd's partial mount was undone before guestfs started
    assert log.index('undo-a:qsd') < log.index('mount:guestfs')


def test_unexpected_exception_in_a_handler_falls_through(chain, conf):
    chain['handlers'] = [FakeHandler('broken', fail=OSError(5, 'I/O error')),
                         FakeHandler('loop')]
    result = run(chain, conf)
    assert result['handler'] == 'loop'
    assert 'I/O error' in result['attempts'][0]['reason']


def test_no_handler_lists_every_reason(chain, conf):
    chain['handlers'] = [
        FakeHandler('loop'),
        FakeHandler('nbd', cow=True, unavailable='no nbd driver; modprobe'),
    ]
    with pytest.raises(exception.NoHandlerMounted) as err:
        run(chain, conf, use_cow=True)
    message = str(err.value)
    assert 'loop: cannot do copy-on-write' in message
    assert 'nbd: no nbd driver; modprobe' in message
    assert '\n' not in message
    assert [name for name, _reason in err.value.reasons] == ['loop', 'nbd']


def test_injection_error_does_not_fall_through_but_unwinds(chain, conf,
                                                          monkeypatch):
    log = []
    chain['handlers'] = [FakeHandler('a', log=log), FakeHandler('b', log=log)]

    def refuse(files, request, image_desc='', conf=None):
        raise exception.GuestPathRefused(path='/x', reason='escapes')
    monkeypatch.setattr(disk_chain.inject, 'inject_data', refuse)
    with pytest.raises(exception.GuestPathRefused):
        run(chain, conf)
    assert log == ['mount:a', 'undo-b:a', 'undo-a:a']


def test_any_other_error_is_ours_with_its_type(chain, conf, monkeypatch):
    chain['handlers'] = [FakeHandler('a')]

    def broken(files, request, image_desc='', conf=None):
        raise RuntimeError('guest tree vanished')
    monkeypatch.setattr(disk_chain.inject, 'inject_data', broken)
    with pytest.raises(exception.InjectionFailed) as err:
        run(chain, conf)
    assert 'RuntimeError: guest tree vanished' in str(err.value)
    assert 'key' in str(err.value) and 'AAAA' not in str(err.value)


def test_ctrl_c_during_mount_unwinds_and_propagates(chain, conf):
    log = []
    chain['handlers'] = [FakeHandler('a', log=log, fail=KeyboardInterrupt()),
                         FakeHandler('b', log=log)]
    with pytest.raises(KeyboardInterrupt):
        run(chain, conf)
    assert log == ['mount:a', 'undo-a:a']


@pytest.mark.parametrize('confined', [False, True])
def test_image_held_and_confined_only_for_an_unprivileged_caller(
        chain, conf, tmp_path, confined):
    conf.config(group='inject', image_dirs=[str(tmp_path / 'inst')],
                trusted_backing_dirs=[str(tmp_path / 'base')])
    (tmp_path / 'base').mkdir()  # a confined caller trusts only real dirs
    chain['handlers'] = [FakeHandler('a')]
    run(chain, conf, confined=confined)
    assert chain['inspected'] == [{
        'path': '/images/disk.raw', 'fmt': None, 'held': True,
        'trusted_dirs': (str(tmp_path / 'base'),),
        'within': (str(tmp_path / 'inst'),) if confined else None}]


def test_job_is_checked_before_anything_is_loaded(chain, conf):
    chain['handlers'] = [FakeHandler('a')]
    job = disk_job.build('/images/disk.raw', request(), 'vmdk', 0, ['a'],
                         False, None)
    with pytest.raises(exception.ConfigError, match='vmdk'):
        disk_chain.run(job, confined=True, conf=conf.conf)
    assert chain['loaded'] == [] and chain['inspected'] == []
