"""The ``ksm:`` flavor extra spec validator nova-api loads: its name, its
boolean values, and the entry point that makes nova-api load it (nova's
own validation runs in the nova-functional tier)."""

import importlib.metadata

import pytest

from nova_ksm_inject.ksm import sharing
from tests.unit import fake_nova


@pytest.fixture
def extra_specs(monkeypatch):
    return fake_nova.import_with_fake_nova(
        monkeypatch, 'nova_ksm_inject.api.extra_specs')


def test_register_gives_nova_the_ksm_merge_validator(extra_specs):
    validators = extra_specs.register()
    assert [v.name for v in validators] == ['ksm:merge']
    assert validators[0].value['type'] is bool
    assert 'nosharepages' in validators[0].description
    # nova's API reference lists what the driver accepts.
    assert sharing.ACCEPTED_TEXT in validators[0].value['description']


@pytest.mark.parametrize('value', ['true', 'false', 'True', 'no', '1'])
def test_boolean_values_pass(extra_specs, value):
    validator, = extra_specs.register()
    validator.validate('ksm:merge', value)


@pytest.mark.parametrize('value', ['maybe', '', 'on-weekends'])
def test_other_values_are_refused(extra_specs, value):
    validator, = extra_specs.register()
    with pytest.raises(fake_nova.ValidationError):
        validator.validate('ksm:merge', value)


def assert_accepts_what_the_driver_does(validate, error):
    """``validate(value)`` raises ``error`` exactly for the values
    :func:`sharing.parse` refuses (the nova tier passes nova's own)."""
    values = [s for pair in sharing.ACCEPTED for s in pair]
    values += [v.upper() for v in values] + [v.title() for v in values]
    values += [' no ', 'maybe', '', 'nope', 'yess', '2', 'enabled', 'None']
    for value in values:
        try:
            validate(value)
            accepted = True
        except error:
            accepted = False
        assert accepted is (sharing.parse(value) is not None), value


def test_accepted_values_are_the_drivers():
    # The stand-in validates as nova's bool type does.
    validator = fake_nova.ExtraSpecValidator('ksm:merge', '', {'type': bool})
    assert_accepts_what_the_driver_does(
        lambda value: validator.validate('ksm:merge', value),
        fake_nova.ValidationError)


def test_nova_api_finds_it_through_its_entry_point():
    points = importlib.metadata.entry_points(
        group='nova.api.extra_spec_validators')
    assert {(p.name, p.value) for p in points} >= {
        ('ksm', 'nova_ksm_inject.api.extra_specs')}
