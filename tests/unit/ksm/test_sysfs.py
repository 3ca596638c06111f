"""KsmSysfs against fake trees: parsing, validation, writes, refusals."""

import errno
import os

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from tests.unit.ksm import conftest


@pytest.mark.parametrize('text,value', [
    ('100\n', 100), ('-4096\n', -4096), ('[none] scan-time\n', 'none'),
    ('none [scan-time]\n', 'scan-time'), ('weird text\n', 'weird text'),
])
def test_parse(text, value):
    assert ksm_sysfs.parse(text) == value


def test_read_all_parses_words_and_numbers(fake_ksm):
    values = fake_ksm.sysfs.read_all()
    assert values['advisor_mode'] == 'none'
    assert values['pages_to_scan'] == 100
    assert set(values) == set(conftest.KSM_618)


def test_old_kernel_files_are_simply_absent(tmp_path):
    fake = conftest.FakeKsm(tmp_path / 'ksm',
                            missing=conftest.OLD_KERNEL_MISSING)
    values = fake.sysfs.read_all()
    assert 'advisor_mode' not in values
    assert fake.sysfs.read('advisor_mode') is None
    assert fake.sysfs.read_int('pages_scanned', default=-1) == -1
    assert 'advisor_mode' not in fake.sysfs.writable_state()


def test_missing_ksm_is_unavailable(tmp_path):
    sysfs = ksm_sysfs.KsmSysfs(str(tmp_path / 'nothing'))
    assert not sysfs.available()
    with pytest.raises(exception.KsmUnavailable, match='CONFIG_KSM'):
        sysfs.read_all()


def test_default_root_follows_module_path(monkeypatch, fake_ksm):
    monkeypatch.setattr(ksm_sysfs, 'KSM_ROOT', fake_ksm.root)
    assert ksm_sysfs.KsmSysfs().read('run') == 0


@pytest.mark.parametrize('name,value,text', [
    ('run', 1, '1'), ('pages_to_scan', '1000', '1000'),
    ('merge_across_nodes', False, '0'), ('advisor_mode', 'scan-time',
                                         'scan-time'),
    ('sleep_millisecs', 60000, '60000'),
])
def test_validate_accepts(name, value, text):
    assert ksm_sysfs.validate(name, value) == text


@pytest.mark.parametrize('name,value,match', [
    ('run', 3, 'from 0 to 2'), ('sleep_millisecs', 60001, 'to 60000'),
    ('max_page_sharing', 1, 'from 2'), ('pages_to_scan', 'lots', 'integer'),
    ('advisor_mode', 'fast', 'one of none, scan-time'),
    ('full_scans', 1, 'not a KSM knob'),
])
def test_validate_rejects_with_the_range(name, value, match):
    with pytest.raises(exception.ConfigError, match=match):
        ksm_sysfs.validate(name, value)


def test_write(fake_ksm):
    fake_ksm.sysfs.write('pages_to_scan', 5000)
    assert fake_ksm.get('pages_to_scan') == '5000'


def test_write_refused_names_the_knob(fake_ksm):
    os.unlink(os.path.join(fake_ksm.root, 'run'))
    os.mkdir(os.path.join(fake_ksm.root, 'run'))
    with pytest.raises(exception.KsmNotWritable, match='setting run'):
        fake_ksm.sysfs.write('run', 1)


def test_write_busy(fake_ksm, monkeypatch):
    def busy(*args, **kwargs):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
    monkeypatch.setattr('builtins.open', busy)
    with pytest.raises(exception.KsmBusy, match='merge_across_nodes'):
        fake_ksm.sysfs.write('merge_across_nodes', 0)


def test_check_writable_read_only_mount(fake_ksm, monkeypatch):
    class Ro(object):
        f_flag = os.ST_RDONLY
    monkeypatch.setattr(os, 'statvfs', lambda path: Ro())
    with pytest.raises(exception.KsmNotWritable, match='mounted read-only'):
        fake_ksm.sysfs.check_writable(['run'])


def test_check_writable_permission(fake_ksm, monkeypatch):
    monkeypatch.setattr(os, 'access', lambda path, mode: False)
    with pytest.raises(exception.KsmNotWritable, match='no write permission'):
        fake_ksm.sysfs.check_writable(['pages_to_scan'])
