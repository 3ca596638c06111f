"""Which guests may merge: project list, flavor, image; "no" wins; a
value that is not a boolean is refused, named with the accepted ones."""

import pytest

from nova_ksm_inject import exception
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
    # Not a boolean: closed, whoever wrote it, and said first.
    ([], 'maybe', None, False, "ksm:merge='maybe' in the flavor is not a "
                               "boolean"),
    ([], None, 'sometimes', False, "ksm_merge='sometimes' in the image"),
    ([OTHER], 'maybe', None, False, "ksm:merge='maybe'"),
    ([], 'false', 'sometimes', False, "ksm_merge='sometimes'"),
])
def test_decide(projects, flavor, image, mergeable, reason):
    decision = sharing.decide(
        LAB, {} if flavor is None else {'ksm:merge': flavor},
        {} if image is None else {'ksm_merge': image}, projects)
    assert decision.mergeable is mergeable
    assert reason in decision.reason
    assert bool(decision.reason) is not mergeable
    assert decision.invalid is bool({flavor, image} & {'maybe', 'sometimes'})


def test_image_properties_from_system_metadata():
    sysmeta = {'image_ksm_merge': 'false', 'image_disk_format': 'raw',
               'owner_user_name': 'x'}
    assert sharing.image_properties(sysmeta) == {
        'ksm_merge': 'false', 'disk_format': 'raw'}
    assert sharing.image_properties(None) == {}


@pytest.mark.parametrize('value,parsed', [
    ('true', True), ('False', False), (' yes ', True), ('N', False),
    ('1', True), ('off', False), ('t', True),
    ('maybe', None), ('', None), ('2', None), ('truee', None), (None, None),
])
def test_parse(value, parsed):
    assert sharing.parse(value) is parsed


def test_every_accepted_spelling_parses_in_any_case():
    for true, false in sharing.ACCEPTED:
        for spell in (str.lower, str.upper, str.title):
            assert (sharing.parse(spell(true)),
                    sharing.parse(spell(false))) == (True, False)
    assert ('true', 'false') in sharing.ACCEPTED
    assert sharing.ACCEPTED_TEXT == (
        'true or false (also accepted, in any case: 1/0, t/f, on/off, y/n, '
        'yes/no)')


@pytest.mark.parametrize('flavor,image,message', [
    ({'ksm:merge': 'maybe'}, {'ksm_merge': 'never'},
     "ksm:merge='maybe' in flavor lab.maybe is not a boolean; use true or "
     "false (also accepted, in any case: 1/0, t/f, on/off, y/n, yes/no)"),
    ({'ksm:merge': 'No'}, {'ksm_merge': 'never'},
     "ksm_merge='never' in image 5e1f is not a boolean; use true or false "
     "(also accepted, in any case: 1/0, t/f, on/off, y/n, yes/no)"),
])
def test_check_names_the_bad_value_where_and_what_is_accepted(flavor, image,
                                                              message):
    with pytest.raises(exception.KsmMergeInvalid) as raised:
        sharing.check(flavor, image, flavor='lab.maybe', image='5e1f')
    assert str(raised.value) == message


@pytest.mark.parametrize('flavor,image', [
    (None, None), ({}, {}), ({'ksm:merge': 'TRUE'}, {'ksm_merge': 'off'}),
    ({'hw:cpu_policy': 'maybe'}, {'other': 'maybe'}),
])
def test_check_passes_booleans_and_absent_values(flavor, image):
    sharing.check(flavor, image, flavor='lab', image='5e1f')
