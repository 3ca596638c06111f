"""The libvirt operations the hook acts on."""

import pytest

from nova_ksm_inject.ksm.hook import events


@pytest.mark.parametrize('op,subop,relevant', [
    ('prepare', 'begin', True), ('started', 'begin', True),
    ('release', 'end', True), ('start', 'begin', False),
    ('stopped', 'end', False), ('migrate', 'begin', False),
])
def test_relevant_events(op, subop, relevant):
    assert events.is_relevant(op, subop) is relevant
