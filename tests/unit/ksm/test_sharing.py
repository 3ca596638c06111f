"""Which guests may merge: project list, flavor, image; "no" wins."""

import pytest

from nova_ksm_inject.ksm import sharing

LAB, OTHER = 'aa11' * 8, 'bb22' * 8


@pytest.mark.parametrize('projects,flavor,image,mergeable,reason', [
    # Defaults: everybody merges.
    ([], None, None, True, ''),
    ([], 'true', 'yes', True, ''),
    # The operator's project list.
    ([LAB], None, None, True, ''),
    ([OTHER], None, None, False, 'project %s is not in [ksm] '
                                 'mergeable_projects' % LAB),
    # A "true" never overrides a "no" elsewhere.
    ([OTHER], 'true', 'true', False, 'mergeable_projects'),
    ([], 'false', 'true', False, 'flavor extra spec ksm:merge=false'),
    ([], 'true', 'false', False, 'image property ksm_merge=false'),
    ([], 'True', 'No', False, 'image property ksm_merge=No'),
    # Not a boolean: closed, whoever wrote it.
    ([], 'maybe', None, False, 'ksm:merge=maybe'),
    ([], None, 'sometimes', False, 'ksm_merge=sometimes'),
])
def test_decide(projects, flavor, image, mergeable, reason):
    decision = sharing.decide(
        LAB, {} if flavor is None else {'ksm:merge': flavor},
        {} if image is None else {'ksm_merge': image}, projects)
    assert decision.mergeable is mergeable
    assert reason in decision.reason
    assert bool(decision.reason) is not mergeable


def test_image_properties_from_system_metadata():
    sysmeta = {'image_ksm_merge': 'false', 'image_disk_format': 'raw',
               'owner_user_name': 'x'}
    assert sharing.image_properties(sysmeta) == {
        'ksm_merge': 'false', 'disk_format': 'raw'}
    assert sharing.image_properties(None) == {}
