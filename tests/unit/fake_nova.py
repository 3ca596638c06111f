"""Stand-ins for the few nova modules our nova-facing modules import, so
that unit tests drive them without nova installed (the ``nova`` tiers run
them against the real thing).

:func:`import_with_fake_nova` installs the stand-ins in ``sys.modules``
for one test and imports a module of ours afresh on top of them; both are
gone afterwards.
"""

import dataclasses
import importlib
import sys
import types

from oslo_config import cfg
from oslo_utils import strutils


class InvalidConfiguration(Exception):
    pass


class ValidationError(Exception):
    pass


class NovaException(Exception):
    """nova's exceptions: a message template filled from keywords."""

    msg_fmt = '%(reason)s'

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        super().__init__(self.msg_fmt % kwargs)


class BuildAbortException(NovaException):
    msg_fmt = 'Build of instance %(instance_uuid)s aborted: %(reason)s'


class ResizeError(NovaException):
    msg_fmt = 'Resize error: %(reason)s'


class InstanceFaultRollback(Exception):
    def __init__(self, inner_exception=None):
        self.inner_exception = inner_exception
        super().__init__('Instance rollback performed due to: %s'
                         % inner_exception)


@dataclasses.dataclass
class ExtraSpecValidator:
    """nova.api.validation.extra_specs.base.ExtraSpecValidator, for the
    value types our validators use."""

    name: str
    description: str
    value: dict

    def validate(self, name, value):
        if name != self.name:
            raise ValidationError('expected %s, got %s' % (self.name, name))
        if self.value['type'] is bool:
            try:
                strutils.bool_from_string(value, strict=True)
            except ValueError as err:
                raise ValidationError(str(err)) from err
        elif self.value['type'] is not str:
            raise ValueError('unsupported type %s' % self.value['type'])


class LibvirtConfigGuestMemoryBacking:
    """nova's <memoryBacking>: ``sharedpages`` False is <nosharepages/>."""

    def __init__(self):
        self.sharedpages = True
        self.hugepages = []


class LibvirtDriver:
    """nova's libvirt driver: ``guest`` is what its guest config returns;
    ``calls`` lists the methods of nova's that ran (name, instance)."""

    guest = None

    def __init__(self, *args, **kwargs):
        self.calls = []

    def spawn(self, context, instance, *args, **kwargs):
        self.calls.append(('spawn', instance))

    def rebuild(self, context, instance, *args, **kwargs):
        self.calls.append(('rebuild', instance))
        raise NotImplementedError()  # nova's: the manager's default

    def migrate_disk_and_power_off(self, context, instance, *args,
                                   **kwargs):
        self.calls.append(('migrate_disk_and_power_off', instance))
        return 'disk info'

    def _get_guest_config(self, instance, *args, **kwargs):
        return self.guest


def _modules():
    virt_model = types.SimpleNamespace(FORMAT_RAW='raw', FORMAT_QCOW2='qcow2')
    return {
        'nova': {},
        'nova.exception': {'InvalidConfiguration': InvalidConfiguration,
                           'ValidationError': ValidationError,
                           'BuildAbortException': BuildAbortException,
                           'InstanceFaultRollback': InstanceFaultRollback,
                           'ResizeError': ResizeError},
        'nova.conf': {'CONF': cfg.CONF},
        'nova.api': {},
        'nova.api.validation': {},
        'nova.api.validation.extra_specs': {},
        'nova.api.validation.extra_specs.base': {
            'ExtraSpecValidator': ExtraSpecValidator},
        'nova.virt': {},
        'nova.virt.netutils': {
            'get_injected_network_template': lambda *a, **k: None},
        'nova.virt.image': {},
        'nova.virt.image.model': vars(virt_model),
        'nova.virt.libvirt': {},
        'nova.virt.libvirt.config': {
            'LibvirtConfigGuestMemoryBacking':
                LibvirtConfigGuestMemoryBacking},
        'nova.virt.libvirt.driver': {'LibvirtDriver': LibvirtDriver},
    }


def import_with_fake_nova(monkeypatch, name):
    """Import our module ``name`` afresh over the nova stand-ins."""
    for module_name, attrs in _modules().items():
        module = types.ModuleType(module_name)
        module.__path__ = []  # every one may be a package
        vars(module).update(attrs)
        monkeypatch.setitem(sys.modules, module_name, module)
        parent, _, child = module_name.rpartition('.')
        if parent:
            setattr(sys.modules[parent], child, module)
    # Gone afterwards: a later test imports the real one (or fails to).
    monkeypatch.setitem(sys.modules, name, None)
    del sys.modules[name]
    package, _, child = name.rpartition('.')
    monkeypatch.setattr(importlib.import_module(package), child, None,
                        raising=False)
    return importlib.import_module(name)
