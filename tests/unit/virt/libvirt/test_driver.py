"""The driver's guest config: ``<nosharepages/>`` exactly where the KSM
policy forbids merging, nova's memory backing kept otherwise; a
``ksm:merge``/``ksm_merge`` value that is not a boolean aborts a build or
rebuild before nova's code runs and refuses a resize. nova's libvirt
driver, config classes and exceptions are stand-ins here
(:mod:`tests.unit.fake_nova`); the nova tiers run the real ones."""

import types

import pytest

from tests.unit import fake_nova

LAB, OTHER = 'aa11' * 8, 'bb22' * 8


@pytest.fixture
def driver(monkeypatch):
    module = fake_nova.import_with_fake_nova(
        monkeypatch, 'nova_ksm_inject.virt.libvirt.driver')
    return module.LibvirtDriver()


def _flavor(extra_specs=None, name='lab.small'):
    return types.SimpleNamespace(extra_specs=extra_specs or {}, name=name,
                                 flavorid=name)


def _instance(project=LAB, flavor=None, sysmeta=None):
    return types.SimpleNamespace(
        project_id=project, uuid='u-1', image_ref='img-1',
        flavor=_flavor(flavor), system_metadata=sysmeta or {})


def _guest_config(driver, project=LAB, flavor=None, sysmeta=None,
                  membacking=None):
    driver.guest = types.SimpleNamespace(membacking=membacking)
    return driver._get_guest_config(_instance(project, flavor, sysmeta),
                                    None, None, None)


def test_mergeable_guest_keeps_nova_memory_backing(driver, conf):
    assert _guest_config(driver).membacking is None
    backing = fake_nova.LibvirtConfigGuestMemoryBacking()
    guest = _guest_config(driver, flavor={'ksm:merge': 'true'},
                          membacking=backing)
    assert guest.membacking is backing
    assert backing.sharedpages is True


@pytest.mark.parametrize('projects,flavor,sysmeta', [
    ([OTHER], None, None),
    ([], {'ksm:merge': 'false'}, None),
    ([], None, {'image_ksm_merge': 'false'}),
])
def test_not_mergeable_gets_nosharepages(driver, conf, projects, flavor,
                                         sysmeta):
    conf.config(group='ksm', mergeable_projects=projects)
    guest = _guest_config(driver, flavor=flavor, sysmeta=sysmeta)
    assert isinstance(guest.membacking,
                      fake_nova.LibvirtConfigGuestMemoryBacking)
    assert guest.membacking.sharedpages is False


def test_nosharepages_added_to_nova_memory_backing(driver, conf):
    backing = fake_nova.LibvirtConfigGuestMemoryBacking()
    backing.hugepages = ['2048']
    guest = _guest_config(driver, flavor={'ksm:merge': 'false'},
                          membacking=backing)
    assert guest.membacking is backing
    assert (backing.sharedpages, backing.hugepages) == (False, ['2048'])


def test_guest_with_a_bad_value_already_is_not_mergeable_and_warned(
        driver, conf, caplog):
    # Stored before spawn refused them: a hard reboot or live migration
    # writes the XML again; closed, and said.
    guest = _guest_config(driver, flavor={'ksm:merge': 'maybe'})
    assert guest.membacking.sharedpages is False
    [record] = [r for r in caplog.records if 'not mergeable' in r.message]
    assert record.levelname == 'WARNING'
    assert "ksm:merge='maybe' in flavor lab.small is not a boolean" in \
        record.message


BAD = {
    'flavor': ({'ksm:merge': 'maybe'}, None,
               "ksm:merge='maybe' in flavor lab.small is not a boolean; use "
               "true or false (also accepted, in any case: 1/0, t/f, on/off, "
               "y/n, yes/no)"),
    'image': (None, {'image_ksm_merge': 'sometimes'},
              "ksm_merge='sometimes' in image img-1 is not a boolean; use "
              "true or false"),
}


@pytest.mark.parametrize('method', ['spawn', 'rebuild'])
@pytest.mark.parametrize('where', sorted(BAD))
def test_bad_value_aborts_the_build_before_nova_runs(driver, method, where):
    flavor, sysmeta, message = BAD[where]
    instance = _instance(flavor=flavor, sysmeta=sysmeta)
    with pytest.raises(fake_nova.BuildAbortException) as raised:
        getattr(driver, method)('ctx', instance, 'image meta', [], None, {})
    assert str(raised.value).startswith('Build of instance u-1 aborted: '
                                        + message)
    assert driver.calls == []


@pytest.mark.parametrize('flavor,sysmeta', [
    (None, None),
    ({'ksm:merge': 'false'}, {'image_ksm_merge': ' Yes '}),
    ({'ksm:merge': 'ON'}, {'image_ksm_merge': '0'}),
])
def test_boolean_values_build_as_nova_does(driver, flavor, sysmeta):
    instance = _instance(flavor=flavor, sysmeta=sysmeta)
    driver.spawn('ctx', instance, 'image meta', [], None, {})
    # nova's rebuild is not implemented: the manager's default runs.
    with pytest.raises(NotImplementedError):
        driver.rebuild(context='ctx', instance=instance)
    assert driver.calls == [('spawn', instance), ('rebuild', instance)]


def test_resize_to_a_flavor_with_a_bad_value_is_refused_and_rolled_back(
        driver):
    instance = _instance()
    with pytest.raises(fake_nova.InstanceFaultRollback) as raised:
        driver.migrate_disk_and_power_off(
            'ctx', instance, 'dest', _flavor({'ksm:merge': 'maybe'},
                                             name='lab.maybe'), [])
    inner = raised.value.inner_exception
    assert isinstance(inner, fake_nova.ResizeError)
    assert str(inner).startswith(
        "Resize error: ksm:merge='maybe' in flavor lab.maybe is not a "
        "boolean; use true or false")
    assert driver.calls == []


def test_resize_to_a_good_flavor_and_migration_go_through(driver):
    # A guest with a bad value already can be resized away from it, and
    # migrated as it is (closed, warned, as in a hard reboot).
    instance = _instance(flavor={'ksm:merge': 'maybe'})
    for flavor in (_flavor({'ksm:merge': 'false'}, name='lab.ok'),
                   instance.flavor):
        assert driver.migrate_disk_and_power_off(
            'ctx', instance, 'dest', flavor, []) == 'disk info'
    assert driver.calls == [('migrate_disk_and_power_off', instance)] * 2
