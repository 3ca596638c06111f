"""nova's mandatory/best-effort contract on top of the handler chain,
with a stand-in for ``disk.api.inject_data`` (no nova, no root needed)."""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import inject
from nova_ksm_inject.virt.libvirt import injection

FILES = [('/etc/motd', b'hi\n')]


class Chain(object):
    """Records every call; ``fail`` maps an item to the error it raises
    (the whole call fails as the real chain stops at that item)."""

    def __init__(self, fail=None, setup_error=None):
        self.fail = fail or {}
        self.setup_error = setup_error
        self.calls = []
        self.written = set()

    def __call__(self, path, request, fmt, partition, handler_names):
        self.calls.append(injection.requested(request))
        if self.setup_error:
            raise self.setup_error
        for item in injection.requested(request):
            if item in self.fail:
                raise self.fail[item]
            self.written.add(item)


def request(**overrides):
    values = dict(key='ssh-ed25519 AAAA lab', net='auto eth0\n',
                  metadata={'a': 'b'}, admin_password='pw', files=FILES)
    values.update(overrides)
    return inject.InjectionRequest(**values)


def injector(chain):
    return injection.NovaRulesInjector('/disk', 'raw', 0, 'img-1',
                                       inject_data=chain)


def test_everything_in_one_call_when_all_succeeds():
    chain = Chain()
    assert injector(chain).inject(request()) == []
    assert chain.calls == [list(injection.ITEMS)]


def test_best_effort_item_dropped_and_rest_injected_again():
    chain = Chain(fail={'admin_password': exception.NoShadowEntry(
        reason='no root entry')})
    ignored = injector(chain).inject(request())
    assert [item for item, _ in ignored] == ['admin_password']
    assert chain.written == {'key', 'net', 'metadata', 'files'}
    assert chain.calls[-1] == ['key', 'net', 'metadata', 'files']


def test_failed_file_raises():
    err = exception.InjectionFailed(what='file /etc/motd', image='/disk',
                                    reason='read-only')
    chain = Chain(fail={'files': err})
    with pytest.raises(exception.InjectionFailed):
        injector(chain).inject(request())


def test_unidentified_item_failure_retries_each_item_alone():
    err = exception.GuestPathRefused(path='/root/.ssh', reason='symlink')
    chain = Chain(fail={'key': err})
    ignored = injector(chain).inject(request())
    assert [item for item, _ in ignored] == ['key']
    assert chain.calls[1:] == [[item] for item in injection.ITEMS]
    assert chain.written == {'net', 'metadata', 'admin_password', 'files'}


def test_image_not_opened_raises_when_files_requested():
    chain = Chain(setup_error=exception.NoHandlerMounted('/disk', []))
    with pytest.raises(exception.NoHandlerMounted):
        injector(chain).inject(request())


def test_image_not_opened_is_ignored_without_files():
    chain = Chain(setup_error=exception.NoHandlerMounted('/disk', []))
    ignored = injector(chain).inject(request(files=[]))
    assert len(chain.calls) == 1
    assert [item for item, _ in ignored] == ['key', 'net', 'metadata',
                                             'admin_password']


def test_invalid_best_effort_item_dropped_before_opening_the_image():
    chain = Chain()
    ignored = injector(chain).inject(request(key='line1\nline2'))
    assert [item for item, _ in ignored] == ['key']
    assert chain.calls == [['net', 'metadata', 'admin_password', 'files']]


def test_invalid_file_raises_before_opening_the_image():
    chain = Chain()
    with pytest.raises(exception.GuestPathRefused):
        injector(chain).inject(request(files=[('relative', b'x')]))
    assert chain.calls == []


def test_empty_request_opens_nothing():
    chain = Chain()
    assert injector(chain).inject(inject.InjectionRequest()) == []
    assert chain.calls == []


def test_failed_item_names():
    assert injection.failed_item(exception.InjectionFailed(
        what='metadata', image='x', reason='y')) == 'metadata'
    assert injection.failed_item(exception.InjectionFailed(
        what='file /a', image='x', reason='y')) == 'files'
    assert injection.failed_item(exception.InjectionFailed(
        what='SELinux autorelabel', image='x', reason='y')) is None
