"""Validator of the ``ksm:`` flavor extra spec namespace, for nova-api.

nova-api loads every module of the entry point namespace
``nova.api.extra_spec_validators`` and calls its ``register()``; with this
package installed next to nova-api, ``ksm:merge=maybe`` (or a typo such as
``ksm:merg``) is refused with a 400 as nova's own namespaces are, from
microversion 2.86 on. Below 2.86 nova-api stores any value; the driver
then refuses to build a guest with one that is not a boolean. Both accept
:data:`nova_ksm_inject.ksm.sharing.ACCEPTED` (nova's ``bool`` type is
oslo's strict ``bool_from_string``, which :func:`sharing.parse` uses too).
See :mod:`nova_ksm_inject.ksm.sharing` for what the value does.
"""

from nova.api.validation.extra_specs import base

from nova_ksm_inject.ksm import sharing

EXTRA_SPEC_VALIDATORS = [
    base.ExtraSpecValidator(
        name=sharing.FLAVOR_EXTRA_SPEC,
        description=(
            'Whether KSM may merge the memory of guests of this flavor '
            '(nova-ksm-inject). ``false`` gives them '
            '``<memoryBacking><nosharepages/>``, so QEMU never offers their '
            'memory to KSM. ``true`` is the default and cannot override '
            '``[ksm] mergeable_projects`` or an image that says '
            '``ksm_merge=false``. Only supported by the '
            '``ksm_inject.LibvirtDriver`` compute driver, which refuses to '
            'build a guest with any other value.'),
        value={
            'type': bool,
            'description': 'Whether the memory may be merged: %s.'
                           % sharing.ACCEPTED_TEXT,
        },
    ),
]


def register():
    return EXTRA_SPEC_VALIDATORS
