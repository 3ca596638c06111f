"""The libvirt qemu hook: guests starting and stopping, as KSM sees them.

libvirt runs ``/etc/libvirt/hooks/qemu.d/*`` with ``DOMAIN OP SUBOP
EXTRA`` and the domain XML on stdin, and waits for it while it holds the
domain (and for some operations the driver) lock. So the hook never
connects back to libvirtd (that deadlocks), bounds every wait, and touches
only sysfs, /proc and its state directory.
"""

import dataclasses
import os

from oslo_log import log as logging

from nova_ksm_inject.ksm import control
from nova_ksm_inject.ksm import domainxml
from nova_ksm_inject.ksm.hook import events

LOG = logging.getLogger(__name__)

LOCK_TIMEOUT = 2.0
LIBVIRT_QEMU_RUN_DIR = '/run/libvirt/qemu'


# nova's domain metadata (1.1 since nova 2023.1; 1.0 before).
NOVA_NS_PREFIX = '{http://openstack.org/xmlns/libvirt/nova/'


@dataclasses.dataclass
class Domain(object):
    """What the hook needs from a domain XML.

    ``instance`` and ``project`` (id) and ``project_name`` come from the
    ``<nova:instance>`` metadata nova-compute writes; None for a domain
    nova did not define.
    """

    name: str
    uuid: str
    mergeable: bool
    reason: str = ''
    memory_kib: int = 0
    instance: str = None
    project: str = None
    project_name: str = None


def parse_domain(xml_text, name=None):
    """Parse a domain XML; never raises on missing elements.

    A guest is not mergeable when its XML has ``<memoryBacking>`` with
    ``<nosharepages/>`` (libvirt then starts qemu with mem-merge=off) or
    ``<hugepages/>`` (KSM does not merge huge pages).
    """
    root = domainxml.fromstring(xml_text)
    name = root.findtext('name') or name or 'unknown'
    uuid = root.findtext('uuid') or name
    memory = root.find('currentMemory')
    if memory is None:
        memory = root.find('memory')
    memory_kib = _kib(memory)
    backing = root.find('memoryBacking')
    reason = ''
    if backing is not None and backing.find('nosharepages') is not None:
        reason = 'memoryBacking has <nosharepages/>'
    elif backing is not None and backing.find('hugepages') is not None:
        reason = 'memory is backed by huge pages'
    return Domain(name=name, uuid=uuid, mergeable=not reason, reason=reason,
                  memory_kib=memory_kib, **_nova_owner(root, uuid))


def _nova_owner(root, uuid):
    """{instance, project, project_name} from nova's metadata, if any.

    nova names the domain's ``<uuid>`` after the instance and writes the
    owning project as ``<nova:owner><nova:project uuid="ID">NAME``.
    """
    for meta in root.findall('metadata/*'):
        if meta.tag.startswith(NOVA_NS_PREFIX) and \
                meta.tag.endswith('}instance'):
            ns = meta.tag[:meta.tag.index('}') + 1]
            project = meta.find('%sowner/%sproject' % (ns, ns))
            return {'instance': uuid,
                    'project': None if project is None
                    else project.get('uuid'),
                    'project_name': None if project is None
                    else (project.text or '').strip() or None}
    return {}


def _kib(element):
    if element is None or not (element.text or '').strip().isdigit():
        return 0
    factor = {'b': 1 / 1024, 'bytes': 1 / 1024, 'kib': 1, 'k': 1,
              'mib': 1024, 'm': 1024, 'gib': 1024 ** 2, 'g': 1024 ** 2}
    unit = element.get('unit', 'KiB').lower()
    return int(int(element.text) * factor.get(unit, 1))


def qemu_pid(name, run_dir=LIBVIRT_QEMU_RUN_DIR):
    """The qemu pid libvirt wrote for ``name``, or None before it exists."""
    try:
        with open(os.path.join(run_dir, name + '.pid')) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Hook(object):
    """One hook invocation's work.

    :param settings: a :class:`KsmSettings`.
    :param host: a :class:`KsmHost` without libvirt connection.
    :param statedir: a :class:`KsmStateDir`.
    """

    def __init__(self, settings, host, statedir,
                 proc_root=None,
                 run_dir=LIBVIRT_QEMU_RUN_DIR):
        self.settings = settings
        self.host = host
        self.statedir = statedir
        self.proc_root = proc_root
        self.run_dir = run_dir

    def handle(self, domain_name, op, subop, xml_text):
        """Record the guest change and bring KSM in line with it.

        :returns: the :class:`ApplyResult`, or None when nothing to do.
        :raises NovaKsmInjectError: for the caller to log (exit 0).
        """
        if not events.is_relevant(op, subop):
            return None
        domain = parse_domain(xml_text, domain_name)
        starting = (op, subop) in events.START_EVENTS
        with self.statedir.locked(timeout=LOCK_TIMEOUT):
            if starting:
                self._record(domain, op)
            else:
                self.statedir.remove_guest(domain.uuid)
            self.statedir.bump_event('start' if starting else 'stop',
                                     domain.name)
            result = control.apply_configured(
                self.settings, self.host, self.statedir, self.proc_root)
        LOG.info('libvirt %s %s of guest %s (%s%s): %d mergeable guests, '
                 'KSM %s', op, subop, domain.name,
                 'instance %s, project %s; ' % (domain.instance,
                                                domain.project)
                 if domain.instance else '',
                 'mergeable' if domain.mergeable else domain.reason,
                 result.mergeable_guests,
                 'running' if result.run else 'stopped')
        return result

    def _record(self, domain, op):
        pid = qemu_pid(domain.name, self.run_dir) if op != 'prepare' else None
        self.statedir.record_guest({
            'uuid': domain.uuid, 'name': domain.name,
            'mergeable': domain.mergeable, 'reason': domain.reason,
            'memory_kib': domain.memory_kib, 'pid': pid,
            'instance': domain.instance, 'project': domain.project,
            'project_name': domain.project_name})
