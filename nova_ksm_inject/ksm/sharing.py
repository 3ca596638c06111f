"""Which guests KSM may merge: ``[ksm] mergeable_projects``, the flavor
extra spec ``ksm:merge`` and the image property ``ksm_merge``.

Precedence: a "no" from any of the three wins. A guest is mergeable only
if its project may merge (``mergeable_projects`` empty or listing it), its
flavor does not say ``ksm:merge=false`` and its image does not say
``ksm_merge=false``. ``true`` overrides nothing: an image cannot opt into
merging that its flavor or the operator forbids, and a flavor cannot
admit a project the operator left out.

A value that is not a boolean is refused: nova-api refuses it for
flavors from microversion 2.86 (:mod:`nova_ksm_inject.api.extra_specs`)
and the driver refuses to build a guest with one (:func:`check`), whatever
stored it. The accepted spellings are nova-api's own for boolean extra
specs (oslo's strict ``bool_from_string``); :data:`ACCEPTED` is the one
list the validator, :func:`decide` and :func:`check` share. A guest that
has one already (stored before the driver refused them) is not mergeable
(:func:`decide` says why, with ``invalid`` set).

Nothing here imports nova: the driver passes plain values.
"""

import collections

from oslo_utils import strutils

from nova_ksm_inject import exception

FLAVOR_EXTRA_SPEC = 'ksm:merge'
IMAGE_PROPERTY = 'ksm_merge'
#: nova keeps every image property in the instance's system metadata.
SYSTEM_METADATA_KEY = 'image_' + IMAGE_PROPERTY

#: (true, false) spellings, in any case and surrounding blanks, as
#: nova-api's boolean extra spec validator takes them.
ACCEPTED = tuple(zip(strutils.TRUE_STRINGS, strutils.FALSE_STRINGS,
                     strict=True))
#: How messages name them: "true or false (also ...: 1/0, t/f, ...)".
ACCEPTED_TEXT = 'true or false (also accepted, in any case: %s)' % ', '.join(
    '%s/%s' % pair for pair in ACCEPTED if pair != ('true', 'false'))

Decision = collections.namedtuple('Decision', 'mergeable reason invalid',
                                  defaults=(False,))


def parse(value):
    """A ``ksm:merge``/``ksm_merge`` value as a bool; None if it is not
    one of :data:`ACCEPTED`."""
    try:
        return strutils.bool_from_string(value, strict=True)
    except ValueError:
        return None


def check(flavor_extra_specs, image_properties, flavor=None, image=None):
    """Refuse a ``ksm:merge`` or ``ksm_merge`` value that is not a boolean.

    :param flavor: the flavor's name, for the message.
    :param image: the image's ID, for the message.
    :raises KsmMergeInvalid: naming the first such value, where it is and
        what is accepted.
    """
    for key, value, where in _values(flavor_extra_specs, image_properties,
                                     flavor, image):
        if value is not None and parse(value) is None:
            raise exception.KsmMergeInvalid(key=key, value=value, where=where,
                                            accepted=ACCEPTED_TEXT)


def _values(flavor_extra_specs, image_properties, flavor, image):
    yield (FLAVOR_EXTRA_SPEC, (flavor_extra_specs or {}).get(
        FLAVOR_EXTRA_SPEC), 'flavor %s' % flavor if flavor else 'the flavor')
    yield (IMAGE_PROPERTY, (image_properties or {}).get(IMAGE_PROPERTY),
           'image %s' % image if image else 'the image')


def decide(project_id, flavor_extra_specs, image_properties,
           mergeable_projects, flavor=None, image=None):
    """Whether a guest's memory may be merged, and why not.

    :param flavor_extra_specs: the flavor's extra specs (a dict).
    :param image_properties: the image's properties (a dict; the driver
        passes the instance's ``image_*`` system metadata without prefix).
    :param mergeable_projects: ``[ksm] mergeable_projects``.
    :param flavor: the flavor's name, and ``image`` the image's ID, for
        the reason.
    :returns: :class:`Decision` (mergeable, reason, invalid; reason '' if
        mergeable; invalid when a value is not a boolean: it counts as
        false, and its reason is :func:`check`'s message).
    """
    try:
        check(flavor_extra_specs, image_properties, flavor, image)
    except exception.KsmMergeInvalid as err:
        return Decision(False, str(err), invalid=True)
    if mergeable_projects and project_id not in mergeable_projects:
        return Decision(False, 'project %s is not in [ksm] '
                               'mergeable_projects' % project_id)
    value = (flavor_extra_specs or {}).get(FLAVOR_EXTRA_SPEC)
    if parse(value) is False:
        return Decision(False, 'flavor extra spec %s=%s'
                               % (FLAVOR_EXTRA_SPEC, value))
    value = (image_properties or {}).get(IMAGE_PROPERTY)
    if parse(value) is False:
        return Decision(False, 'image property %s=%s'
                               % (IMAGE_PROPERTY, value))
    return Decision(True, '')


def image_properties(system_metadata):
    """An instance's image properties, from its system metadata."""
    return {key[len('image_'):]: value
            for key, value in (system_metadata or {}).items()
            if key.startswith('image_')}
