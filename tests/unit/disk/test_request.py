"""What to inject, as plain data crossing the privsep boundary: type
checks on the privileged side, per-item limits, mandatory items."""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import request as disk_request
from tests.unit import fake_privsep

Request = disk_request.InjectionRequest
KEY = 'ssh-ed25519 AAAAC3Nza user@example'


def full(**overrides):
    values = dict(key=KEY, net='auto lo\n', metadata={'role': 'lab'},
                  admin_password='pw', files=[('/a', b'1'), ('/b', 'two')])
    values.update(overrides)
    return Request(**values)


def test_round_trip_over_the_wire():
    request = full(mandatory=('files',))
    back = Request.from_dict(fake_privsep.over_the_wire(request.to_dict()))
    assert (back.key, back.net, back.metadata, back.admin_password) == (
        KEY, 'auto lo\n', {'role': 'lab'}, 'pw')
    assert back.files == [('/a', b'1'), ('/b', b'two')]
    assert back.mandatory == ('files',)


def test_default_is_everything_mandatory():
    assert Request().mandatory == disk_request.ITEMS
    assert Request.from_dict(Request().to_dict()).mandatory == \
        disk_request.ITEMS
    assert Request.from_dict({}).mandatory == ()


@pytest.mark.parametrize('data, words', [
    ([], 'not a dict'),
    ({'key': KEY, 'user': 'root'}, 'not a dict'),
    ({'key': 5}, 'key has type int'),
    ({'net': b'auto lo'}, 'net has type bytes'),
    ({'metadata': [['a', 'b']]}, 'metadata has type list'),
    ({'admin_password': 1234}, 'admin_password has type int'),
    ({'files': '/etc/passwd'}, 'files has type str'),
    ({'files': [['/a']]}, 'guest path, content'),
    ({'files': [['/a', 3]]}, 'guest path, content'),
    ({'files': ['/a']}, 'guest path, content'),
    ({'mandatory': 'files'}, 'mandatory has type str'),
    ({'mandatory': ['files', 'everything']}, 'unknown mandatory'),
])
def test_from_dict_checks_every_type(data, words):
    with pytest.raises(exception.InjectionLimit, match=words):
        Request.from_dict(data)


def test_requested_in_write_order_and_mandatory():
    request = full(key=None, mandatory=('files',))
    assert request.requested() == ['net', 'metadata', 'admin_password',
                                   'files']
    assert request.any_mandatory()
    assert not request.without('files').any_mandatory()
    assert request.without('files').requested() == ['net', 'metadata',
                                                    'admin_password']
    assert request.without('net').net is None and request.net  # a copy
    assert Request().is_empty() and not Request().any_mandatory()


def test_describe_and_repr_hide_secrets():
    request = full(metadata={'secret': 'meta-secret'},
                   files=[('/a', b'file-secret'), ('/b', b'')])
    text = request.describe() + repr(request) + str(request)
    assert request.describe() == ('key, net, metadata, admin_password, '
                                  '2 files')
    for secret in ('AAAAC3', 'pw', 'meta-secret', 'file-secret'):
        assert secret not in text
    assert Request(files=[('/a', b'')]).describe() == '1 file'
    assert Request().describe() == 'nothing'


# --- per-item limits ----------------------------------------------------

@pytest.mark.parametrize('request_, item, error, words', [
    (full(key=KEY + '\nssh-rsa AAAA x'), 'key', exception.InjectionLimit,
     'several lines'),
    (full(key='ssh-rsa AAAA\0x'), 'key', exception.InjectionLimit,
     'several lines'),
    (full(admin_password='a\0b'), 'admin_password',
     exception.InjectionLimit, 'NUL'),
    (full(metadata={1: 'x'}), 'metadata', exception.InjectionLimit,
     'keys must be strings'),
    (full(files=[('relative', b'')]), 'files', exception.GuestPathRefused,
     'absolute guest path'),
    (full(files=[('/a\0b', b'')]), 'files', exception.GuestPathRefused,
     'NUL'),
    (full(files=[(b'/a', b'')]), 'files', exception.GuestPathRefused,
     'absolute guest path'),
])
def test_item_limit_error_names_the_rule(conf, request_, item, error,
                                         words):
    err = disk_request.item_limit_error(request_, item, conf.conf)
    assert isinstance(err, error) and words in str(err)
    others = [i for i in request_.requested() if i != item]
    assert [disk_request.item_limit_error(request_, i, conf.conf)
            for i in others] == [None] * len(others)


@pytest.mark.parametrize('option, value, files', [
    ('max_injected_files', 1, [('/a', b''), ('/b', b'')]),
    ('max_injected_file_bytes', 4, [('/a', b'12345')]),
    ('max_injected_file_bytes', 4, [('/a', 'ééé')]),  # 6 bytes in UTF-8
    ('max_injected_file_path_length', 8, [('/123456789', b'')]),
])
def test_file_limits(conf, option, value, files):
    conf.config(group='inject', **{option: value})
    err = disk_request.item_limit_error(full(files=files), 'files',
                                        conf.conf)
    assert isinstance(err, exception.InjectionLimit) and option in str(err)
    conf.config(group='inject', **{option: value * 100})
    assert disk_request.item_limit_error(full(files=files), 'files',
                                         conf.conf) is None


def test_check_limits_raises_for_mandatory_items_only(conf):
    bad_key = full(key='a\nb', mandatory=('files',))
    disk_request.check_limits(bad_key, conf.conf)  # best-effort: later
    with pytest.raises(exception.InjectionLimit, match='several lines'):
        disk_request.check_limits(Request(key='a\nb'), conf.conf)
    bad_files = full(files=[('rel', b'')], mandatory=('files',))
    with pytest.raises(exception.GuestPathRefused):
        disk_request.check_limits(bad_files, conf.conf)
    disk_request.check_limits(full(), conf.conf)


def test_as_bytes():
    assert disk_request.as_bytes('é') == b'\xc3\xa9'
    assert disk_request.as_bytes(b'\xff') == b'\xff'
    assert disk_request.as_bytes(bytearray(b'x')) == b'x'
