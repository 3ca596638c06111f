"""nova's libvirt driver, injecting through the image handler chain and
managing KSM.

Enable it on a compute node with one line of nova.conf::

    [DEFAULT]
    compute_driver = ksm_inject.LibvirtDriver

(nova prefixes ``compute_driver`` with ``nova.virt.``; the package ships
the ``nova.virt.ksm_inject`` shim that re-exports this class.) Everything
else is nova's: only four things change.

* ``init_host``: ``img_handlers`` is checked before nova starts (a typo
  stops nova-compute with a message naming the valid handlers), and the
  ``[ksm]`` configuration is applied through nova's libvirt connection
  plus sysfs. A host without KSM logs one warning and nova-compute starts.
* ``_inject_data``: nova calls it only when its own rules allow injection
  (``[libvirt] inject_partition`` is not -2, no config drive, not booted
  from volume); the data nova would inject (key if ``inject_key``,
  password if ``inject_password``, network from nova's template, metadata,
  files) goes through the ``img_handlers`` chain instead of nova's
  libguestfs path, files mandatory and the rest best-effort, as in nova.
* ``_get_guest_config``: a guest whose memory must not be merged
  (``[ksm] mergeable_projects``, flavor ``ksm:merge``, image ``ksm_merge``;
  see :mod:`nova_ksm_inject.ksm.sharing`) gets
  ``<memoryBacking><nosharepages/>`` in the domain XML nova generates, so
  QEMU never offers its memory to KSM.
* ``spawn``, ``rebuild`` and ``migrate_disk_and_power_off``: a
  ``ksm:merge`` or ``ksm_merge`` value that is not a boolean (nova-api
  stores any below microversion 2.86 and never checks image properties)
  aborts a build or rebuild before anything is created or destroyed, with
  no reschedule (the server goes to ERROR, the value in its fault), and
  refuses a resize to such a flavor, the guest left as it was. A guest
  that has one already is not mergeable, with a warning.
"""

try:
    from nova import exception as nova_exception
    import nova.conf
    from nova.virt import netutils
    from nova.virt.image import model as imgmodel
    from nova.virt.libvirt import config as vconfig
    from nova.virt.libvirt import driver as libvirt_driver
    from oslo_utils import excutils
except ImportError as err:
    if (err.name or '').partition('.')[0] not in ('nova', 'oslo_utils'):
        raise
    raise ImportError('nova_ksm_inject.virt.libvirt.driver needs nova: pip '
                      'install nova-ksm-inject[nova]', name=err.name) from err

from oslo_log import log as logging

from nova_ksm_inject import exception

# Imported after nova.conf: the options nova defines keep nova's
# definitions and ours are added next to them, once.
import nova_ksm_inject.conf  # noqa: F401
from nova_ksm_inject.disk import api as disk_api
from nova_ksm_inject.disk import inject
from nova_ksm_inject.ksm import sharing
from nova_ksm_inject.virt.libvirt import injection
from nova_ksm_inject.virt.libvirt import ksm_startup

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF

# nova's image models whose file our handlers can open.
INJECTABLE_FORMATS = (imgmodel.FORMAT_RAW, imgmodel.FORMAT_QCOW2)


class LibvirtDriver(libvirt_driver.LibvirtDriver):
    """nova's libvirt driver with handler-chain injection and KSM control."""

    def init_host(self, host):
        self._check_img_handlers()
        super().init_host(host)
        self._apply_ksm()

    @staticmethod
    def _check_img_handlers():
        """Refuse to start on an unknown handler name, before nova starts:
        injection would otherwise fail at the first spawn."""
        try:
            disk_api.validate_handler_names(CONF.img_handlers)
        except exception.NovaKsmInjectError as err:
            raise nova_exception.InvalidConfiguration(str(err)) from err

    def _apply_ksm(self):
        """Apply ``[ksm]``; KSM trouble never stops nova-compute."""
        try:
            ksm_startup.apply_ksm_config(self._host.get_connection())
        except exception.KsmUnavailable as err:
            LOG.warning('KSM is not managed on this host: %s', err)
        except (exception.NovaKsmInjectError, OSError) as err:
            LOG.warning('KSM settings from [ksm] were not applied: %s; '
                        'nova-compute continues without them', err)

    def spawn(self, context, instance, *args, **kwargs):
        self._refuse_bad_ksm_values(instance)
        super().spawn(context, instance, *args, **kwargs)

    def rebuild(self, context, instance, *args, **kwargs):
        # Before nova's own rebuild (NotImplementedError from the base
        # class) destroys the guest to spawn it again.
        self._refuse_bad_ksm_values(instance)
        super().rebuild(context, instance, *args, **kwargs)

    def migrate_disk_and_power_off(self, context, instance, dest, flavor,
                                   *args, **kwargs):
        # Only a resize brings a new value; a cold migration keeps the
        # guest's own flavor (a bad value from before: closed, warned).
        if flavor.flavorid != instance.flavor.flavorid:
            try:
                sharing.check(flavor.extra_specs, {}, flavor=flavor.name)
            except exception.KsmMergeInvalid as err:
                LOG.error('Refusing the resize: %s', err, instance=instance)
                raise nova_exception.InstanceFaultRollback(
                    nova_exception.ResizeError(reason=str(err))) from err
        return super().migrate_disk_and_power_off(
            context, instance, dest, flavor, *args, **kwargs)

    @staticmethod
    def _refuse_bad_ksm_values(instance):
        """Abort the build, without a reschedule (any host would refuse),
        if the flavor or image gives ``ksm:merge``/``ksm_merge`` a value
        that is not a boolean."""
        try:
            sharing.check(instance.flavor.extra_specs,
                          sharing.image_properties(instance.system_metadata),
                          flavor=instance.flavor.name,
                          image=instance.image_ref)
        except exception.KsmMergeInvalid as err:
            LOG.error('Refusing to build the guest: %s', err,
                      instance=instance)
            raise nova_exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=str(err)) from err

    def _get_guest_config(self, instance, *args, **kwargs):
        """nova's guest config, without page sharing where
        :func:`sharing.decide` forbids merging."""
        guest = super()._get_guest_config(instance, *args, **kwargs)
        decision = sharing.decide(
            instance.project_id, instance.flavor.extra_specs,
            sharing.image_properties(instance.system_metadata),
            CONF.ksm.mergeable_projects, flavor=instance.flavor.name,
            image=instance.image_ref)
        if not decision.mergeable:
            if guest.membacking is None:
                guest.membacking = vconfig.LibvirtConfigGuestMemoryBacking()
            guest.membacking.sharedpages = False
            # A bad value stored before spawn refused them: closed, said.
            log = LOG.warning if decision.invalid else LOG.debug
            log('Guest memory not mergeable by KSM (%s): <nosharepages/>',
                decision.reason, instance=instance)
        return guest

    def _inject_data(self, disk, instance, injection_info):
        """Inject what nova would, through the ``img_handlers`` chain.

        :param disk: the root disk's imagebackend ``Image``.
        :param injection_info: nova's ``InjectionInfo`` (network_info,
            files, admin_pass).
        """
        request = self._injection_request(instance, injection_info)
        if request.is_empty():
            return
        image_id = instance.image_ref
        LOG.info('Injecting %(what)s into image %(image)s',
                 {'what': request.describe(), 'image': image_id},
                 instance=instance)
        try:
            self._inject_through_chain(disk, instance, request, image_id)
        except exception.NovaKsmInjectError as err:
            LOG.error('Error injecting data into image %(image)s '
                      '(%(err)s)', {'image': image_id, 'err': err},
                      instance=instance)
            # A mandatory item (a file) cannot be written into this image:
            # every host would fail the same way, so no reschedule, and
            # the server's fault says why, on one line.
            raise nova_exception.BuildAbortException(
                instance_uuid=instance.uuid,
                reason='cannot inject into image %s: %s' % (
                    image_id, ' '.join(str(err).split()))) from err
        except Exception as err:
            with excutils.save_and_reraise_exception():
                LOG.error('Error injecting data into image %(image)s '
                          '(%(err)s)', {'image': image_id, 'err': err},
                          instance=instance)

    def _inject_through_chain(self, disk, instance, request, image_id):
        try:
            path, fmt = self._injectable_file(disk)
        except exception.ImageRefused as err:
            # As when no handler can open it: raise only for files.
            injection.setup_failed(request, err, image_id)
            return
        injection.inject(path, fmt, self._injection_partition(instance),
                         image_id, request)

    @staticmethod
    def _injection_request(instance, injection_info):
        """What nova's own ``_inject_data`` would inject, option by option.
        """
        key = None
        if CONF.libvirt.inject_key and instance.get('key_data'):
            key = str(instance.key_data)
        admin_pass = None
        if CONF.libvirt.inject_password:
            admin_pass = injection_info.admin_pass
        net = netutils.get_injected_network_template(
            injection_info.network_info,
            libvirt_virt_type=CONF.libvirt.virt_type)
        return inject.InjectionRequest(
            key=key, net=net, metadata=instance.get('metadata') or None,
            admin_password=admin_pass,
            files=list(injection_info.files or []),
            mandatory=injection.MANDATORY)

    @staticmethod
    def _injection_partition(instance):
        """nova's partition choice, in our terms (0 = whole disk)."""
        # A separate kernel boots a filesystem image; lxc mounts the disk.
        if instance.kernel_id or CONF.libvirt.virt_type == 'lxc':
            return 0
        return CONF.libvirt.inject_partition

    def _injectable_file(self, disk):
        """(path, format) of the disk's local raw or qcow2 file.

        :raises ImageRefused: rbd, lvm or ploop disks, which no handler
            opens.
        """
        model = disk.get_model(self._conn)
        fmt = getattr(model, 'format', None)
        if isinstance(model, imgmodel.LocalFileImage) and \
                fmt in INJECTABLE_FORMATS:
            return model.path, fmt
        raise exception.ImageRefused(
            path=getattr(model, 'path', disk.path),
            reason='image handlers open local raw or qcow2 files only, and '
                   'this disk is a %s; use [libvirt] images_type=qcow2 or '
                   'flat, or a config drive' % (fmt or type(model).__name__))
