"""The privileged side's checks on a job sent by a caller it does not
trust (``confined``), and what a root caller may do.

That a confined job's image must lie in ``image_dirs`` is enforced when
the image is opened: see test_imagefile.py and, through privsep,
test_api.py.
"""

import os

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import inject
from nova_ksm_inject.disk import job as disk_job
from tests.unit import fake_privsep


@pytest.fixture
def dirs(conf, tmp_path):
    inst, base = tmp_path / 'inst', tmp_path / 'base'
    (base / 'sub').mkdir(parents=True)
    inst.mkdir()
    conf.config(group='inject', image_dirs=[str(inst)],
                trusted_backing_dirs=[str(base)])
    return inst, base


def job(**fields):
    data = disk_job.build('/inst/uuid/disk', inject.InjectionRequest(
        key='ssh-ed25519 AAAA k', files=[('/etc/motd', b'hi')]),
        'qcow2', 1, ['qsd', 'loop'], True, None)
    data.update(fields)
    return data


def test_round_trip_over_the_wire(conf, dirs):
    inst, base = dirs
    checked = disk_job.Job.from_dict(fake_privsep.over_the_wire(job()),
                                     conf.conf, confined=True)
    assert (checked.image, checked.format, checked.partition,
            checked.handlers, checked.use_cow) == (
        '/inst/uuid/disk', 'qcow2', 1, ['qsd', 'loop'], True)
    assert checked.trusted_dirs == (str(base),)
    assert checked.image_dirs == (str(inst),)
    assert checked.request.files == [('/etc/motd', b'hi')]
    assert checked.request.key == 'ssh-ed25519 AAAA k'


def test_root_caller_is_not_confined(conf, dirs):
    assert disk_job.Job.from_dict(job(), conf.conf,
                                  confined=False).image_dirs is None


def test_build_makes_the_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = disk_job.build('disk', inject.InjectionRequest(), None, 0,
                          ('loop',), None, ())
    assert (data['image'], data['handlers'], data['trusted_dirs']) == (
        str(tmp_path / 'disk'), ['loop'], None)


def test_use_cow_defaults_to_use_cow_images(conf, dirs):
    for value in (True, False):
        conf.config(use_cow_images=value)
        assert disk_job.Job.from_dict(job(use_cow=None), conf.conf,
                                      True).use_cow is value


# --- trusted backing directories: narrowed, never widened -------------

@pytest.mark.parametrize('asked', [['{base}'], ['{base}/sub'], []])
def test_confined_caller_may_narrow_trusted_dirs(conf, dirs, asked):
    _inst, base = dirs
    asked = [a.format(base=base) for a in asked]
    checked = disk_job.Job.from_dict(job(trusted_dirs=asked), conf.conf,
                                     confined=True)
    assert checked.trusted_dirs == tuple(asked)


@pytest.mark.parametrize('asked', [['/'], ['{tmp}'], ['{base}', '/etc'],
                                   ['{base}-evil'], ['{base}/up']])
def test_confined_caller_may_not_widen_trusted_dirs(conf, dirs, tmp_path,
                                                    asked):
    _inst, base = dirs
    os.symlink(tmp_path, base / 'up')  # inside by name, outside for real
    (tmp_path / 'base-evil').mkdir()
    asked = [a.format(base=base, tmp=tmp_path) for a in asked]
    with pytest.raises(exception.ConfigError, match='only root may widen'):
        disk_job.Job.from_dict(job(trusted_dirs=asked), conf.conf,
                               confined=True)
    assert disk_job.Job.from_dict(job(trusted_dirs=asked), conf.conf,
                                  confined=False).trusted_dirs == \
        tuple(asked)


def test_confined_caller_with_nothing_configured_may_trust_nothing(
        conf, dirs):
    conf.config(group='inject', trusted_backing_dirs=[])
    with pytest.raises(exception.ConfigError, match='none'):
        disk_job.Job.from_dict(job(trusted_dirs=['/var/lib']), conf.conf,
                               confined=True)


# --- malformed jobs ------------------------------------------------------

@pytest.mark.parametrize('fields, words', [
    ({'image': 'relative/disk'}, 'absolute path'),
    ({'image': '/inst/a\0b'}, 'absolute path'),
    ({'image': b'/inst/disk'}, 'absolute path'),
    ({'format': 'vmdk'}, 'not raw or qcow2'),
    ({'partition': -2}, 'partition'),
    ({'partition': '1'}, 'partition'),
    ({'partition': True}, 'partition'),
    ({'handlers': 'loop'}, 'list of names'),
    ({'handlers': ['loop', 3]}, 'list of names'),
    ({'use_cow': 'yes'}, 'use_cow'),
    ({'trusted_dirs': 'relative'}, 'trusted_dirs'),
    ({'trusted_dirs': ['relative']}, 'trusted_dirs'),
])
def test_malformed_field_is_refused(conf, dirs, fields, words):
    with pytest.raises(exception.ConfigError, match=words):
        disk_job.Job.from_dict(job(**fields), conf.conf, confined=True)


@pytest.mark.parametrize('mangle', [
    lambda data: data.pop('format'),
    lambda data: data.update(extra=1),
])
def test_missing_or_extra_field_is_refused(conf, dirs, mangle):
    data = job()
    mangle(data)
    with pytest.raises(exception.ConfigError, match='expected the fields'):
        disk_job.Job.from_dict(data, conf.conf, confined=True)


def test_not_a_dict_is_refused(conf, dirs):
    with pytest.raises(exception.ConfigError):
        disk_job.Job.from_dict([job()], conf.conf, confined=True)


@pytest.mark.parametrize('handlers', [['loop', 'nbdd'], []])
def test_handlers_must_be_installed(conf, dirs, handlers):
    with pytest.raises(exception.UnknownHandler):
        disk_job.Job.from_dict(job(handlers=handlers), conf.conf,
                               confined=True)


def test_malformed_request_is_refused(conf, dirs):
    data = job()
    data['request']['files'] = 'not a list'
    with pytest.raises(exception.InjectionLimit, match='files'):
        disk_job.Job.from_dict(data, conf.conf, confined=True)
