"""The driver's guest config: ``<nosharepages/>`` exactly where the KSM
policy forbids merging, nova's memory backing kept otherwise. nova's
libvirt driver and config classes are stand-ins here
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


def _guest_config(driver, project=LAB, flavor=None, sysmeta=None,
                  membacking=None):
    driver.guest = types.SimpleNamespace(membacking=membacking)
    instance = types.SimpleNamespace(
        project_id=project, uuid='u-1',
        flavor=types.SimpleNamespace(extra_specs=flavor or {}),
        system_metadata=sysmeta or {})
    return driver._get_guest_config(instance, None, None, None)


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
