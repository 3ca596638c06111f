"""Which guests KSM may merge: ``[ksm] mergeable_projects``, the flavor
extra spec ``ksm:merge`` and the image property ``ksm_merge``.

Precedence: a "no" from any of the three wins. A guest is mergeable only
if its project may merge (``mergeable_projects`` empty or listing it), its
flavor does not say ``ksm:merge=false`` and its image does not say
``ksm_merge=false``. ``true`` overrides nothing: an image cannot opt into
merging that its flavor or the operator forbids, and a flavor cannot
admit a project the operator left out. A value that is not a boolean
counts as false (nova-api rejects it for flavors, see
:mod:`nova_ksm_inject.api.extra_specs`; images are not validated).

Nothing here imports nova: the driver passes plain values.
"""

import collections

from oslo_utils import strutils

FLAVOR_EXTRA_SPEC = 'ksm:merge'
IMAGE_PROPERTY = 'ksm_merge'
#: nova keeps every image property in the instance's system metadata.
SYSTEM_METADATA_KEY = 'image_' + IMAGE_PROPERTY

Decision = collections.namedtuple('Decision', 'mergeable reason')


def _says_no(value):
    """Whether a ``ksm:merge``/``ksm_merge`` value forbids merging."""
    if value is None:
        return False
    try:
        return not strutils.bool_from_string(value, strict=True)
    except ValueError:
        return True


def decide(project_id, flavor_extra_specs, image_properties,
           mergeable_projects):
    """Whether a guest's memory may be merged, and why not.

    :param flavor_extra_specs: the flavor's extra specs (a dict).
    :param image_properties: the image's properties (a dict; the driver
        passes the instance's ``image_*`` system metadata without prefix).
    :param mergeable_projects: ``[ksm] mergeable_projects``.
    :returns: :class:`Decision` (mergeable, reason; reason '' if
        mergeable).
    """
    if mergeable_projects and project_id not in mergeable_projects:
        return Decision(False, 'project %s is not in [ksm] '
                               'mergeable_projects' % project_id)
    value = (flavor_extra_specs or {}).get(FLAVOR_EXTRA_SPEC)
    if _says_no(value):
        return Decision(False, 'flavor extra spec %s=%s'
                               % (FLAVOR_EXTRA_SPEC, value))
    value = (image_properties or {}).get(IMAGE_PROPERTY)
    if _says_no(value):
        return Decision(False, 'image property %s=%s'
                               % (IMAGE_PROPERTY, value))
    return Decision(True, '')


def image_properties(system_metadata):
    """An instance's image properties, from its system metadata."""
    return {key[len('image_'):]: value
            for key, value in (system_metadata or {}).items()
            if key.startswith('image_')}
