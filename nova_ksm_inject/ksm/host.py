"""Per-hypervisor KSM control: libvirt where it can, sysfs for the rest.

libvirt's node memory parameters cover ``pages_to_scan``,
``sleep_millisecs`` and ``merge_across_nodes`` but not ``run`` nor the
newer knobs; those always go through sysfs. The libvirt hook builds a
host without a connection: calling back into libvirtd from its own hook
deadlocks the daemon.

Every change is all or nothing: writability is checked before the first
write, and the knobs already written are put back when a later one fails.
"""

import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.ksm import sysfs as ksm_sysfs

LOG = logging.getLogger(__name__)

LIBVIRT_PARAMS = {
    'pages_to_scan': 'shm_pages_to_scan',
    'sleep_millisecs': 'shm_sleep_millisecs',
    'merge_across_nodes': 'shm_merge_across_nodes',
}


def open_libvirt(uri):
    """A libvirt connection to ``uri``, or None (logged) when unavailable."""
    if not uri:
        return None
    try:
        import libvirt
    except ImportError:
        LOG.warning('libvirt-python is not installed; KSM knobs go through '
                    'sysfs')
        return None
    # libvirt prints every error to stderr unless told otherwise.
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as err:
        LOG.warning('Cannot connect to libvirt at %s (%s); KSM knobs go '
                    'through sysfs', uri, err.get_error_message())
        return None


class KsmHost(object):
    """The KSM of one hypervisor.

    :param sysfs: a :class:`KsmSysfs` (its root may be a fake tree).
    :param connection: an open libvirt connection, or None for sysfs only.
    :param uri: where to reconnect when libvirtd restarts under a
        long-lived host (the tuner); None: never.
    """

    RECONNECT_SECONDS = 60.0

    def __init__(self, sysfs=None, connection=None, uri=None,
                 clock=time.monotonic):
        self.sysfs = sysfs or ksm_sysfs.KsmSysfs()
        self.connection = connection
        self.uri = uri
        self.clock = clock
        self._lost_at = None

    @classmethod
    def for_settings(cls, settings, use_libvirt=True, sysfs=None):
        if not use_libvirt or not settings.connection_uri:
            return cls(sysfs=sysfs)
        return cls(sysfs=sysfs, uri=settings.connection_uri,
                   connection=open_libvirt(settings.connection_uri))

    def _libvirt(self):
        """The connection, reopened a while after libvirtd went away."""
        if self.connection is None and self.uri and (
                self._lost_at is None
                or self.clock() - self._lost_at >= self.RECONNECT_SECONDS):
            self.connection = open_libvirt(self.uri)
            self._lost_at = None if self.connection else self.clock()
        return self.connection

    def _lost(self):
        """Drop a connection libvirtd closed (it restarted or stopped)."""
        try:
            alive = self.connection.isAlive()
        except Exception:  # a dead connection may fail to answer at all
            alive = False
        if not alive:
            LOG.warning('Lost the libvirt connection to %s; KSM knobs go '
                        'through sysfs until it is back', self.uri)
            self.close()
            self._lost_at = self.clock()

    def close(self):
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # closing must never mask the real error
                LOG.debug('Closing the libvirt connection failed',
                          exc_info=True)
            self.connection = None

    def state(self):
        """Every KSM file, parsed (see :meth:`KsmSysfs.read_all`)."""
        return self.sysfs.read_all()

    def save(self):
        """The writable knobs as they are now, to :meth:`restore` later."""
        return self.sysfs.writable_state()

    def restore(self, saved):
        """Put back a :meth:`save` result; returns knobs left as they are."""
        LOG.info('Restoring KSM settings %s', saved)
        return self.apply(saved)

    def set_run(self, run):
        """Start (1), stop (0, merged pages stay) or unmerge (2) ksmd."""
        return self.apply({'run': run})

    def apply(self, knobs, unmerge=False):
        """Write ``knobs`` ({name: value}); knobs this kernel lacks skip.

        :param unmerge: when a tree knob (merge_across_nodes,
            max_page_sharing) must change while pages are shared, unmerge
            everything first (run=2) instead of leaving it for later.
        :returns: [(knob, reason)] left unchanged because pages are shared.
        :raises KsmUnavailable, KsmNotWritable: nothing was changed.
        """
        current = self.sysfs.writable_state()
        wanted = {}
        for name, value in knobs.items():
            text = ksm_sysfs.validate(name, value)
            if name not in current:
                LOG.debug('This kernel has no KSM %s; not setting it', name)
            elif str(current[name]) != text:
                wanted[name] = text
        if not wanted:
            return []
        # Only what goes through sysfs needs a writable sysfs: libvirtd
        # (root) sets its knobs for a nova-compute that is not root.
        self.sysfs.check_writable(
            {n: v for n, v in wanted.items()
             if n not in LIBVIRT_PARAMS or self._libvirt() is None})
        deferred = self._defer_tree_knobs(wanted, current, unmerge)
        order = self._write_order(wanted, current)
        self._write_all(order, wanted, current)
        if order:
            LOG.info('KSM settings changed: %s',
                     ', '.join('%s %s -> %s' % (n, current[n], wanted[n])
                               for n in order))
        return deferred

    def _defer_tree_knobs(self, wanted, current, unmerge):
        tree = [n for n in ksm_sysfs.TREE_KNOBS if n in wanted]
        shared = self.sysfs.read_int('pages_shared')
        if not tree or not shared:
            return []
        if unmerge:
            LOG.warning('Unmerging %d shared KSM pages so that %s can '
                        'change; guests use more memory until they merge '
                        'again', shared, ', '.join(tree))
            self.sysfs.write('run', ksm_sysfs.RUN_UNMERGE)
            # Back to the run state asked for, or to the one before.
            wanted.setdefault('run', str(current['run']))
            return []
        deferred = []
        for name in tree:
            reason = ('%d pages are shared; the kernel accepts a new %s only '
                      'when none is: run "nova-ksm-inject ksm apply '
                      '--unmerge"' % (shared, name))
            LOG.warning('KSM %s stays unchanged: %s', name, reason)
            deferred.append((name, reason))
            del wanted[name]
        return deferred

    @staticmethod
    def _write_order(wanted, current):
        """Knob order: the advisor off first, on last, run at the end."""
        mode = wanted.get('advisor_mode', current.get('advisor_mode'))
        if mode == 'scan-time':
            # The advisor owns pages_to_scan and rejects manual values.
            wanted.pop('pages_to_scan', None)
        order = [n for n in ksm_sysfs.KNOBS if n in wanted]
        if 'advisor_mode' in order and mode == 'scan-time':
            order.remove('advisor_mode')
            order.insert(order.index('run') if 'run' in order else len(order),
                         'advisor_mode')
        return order

    def _write_all(self, order, wanted, current):
        written = []
        try:
            for name in order:
                self._write(name, wanted[name])
                written.append(name)
        except exception.NovaKsmInjectError:
            for name in reversed(written):
                try:
                    self._write(name, current[name])
                except exception.NovaKsmInjectError as err:
                    LOG.error('Could not put KSM %s back to %s: %s',
                              name, current[name], err)
            raise

    def _write(self, name, text):
        param = LIBVIRT_PARAMS.get(name)
        if param is None or self._libvirt() is None:
            self.sysfs.write(name, text)
            return
        try:
            self.connection.setMemoryParameters({param: int(text)}, 0)
            LOG.debug('Set %s=%s through libvirt', param, text)
        except Exception as err:
            # By name: inside nova-compute's tests libvirt is nova's fake
            # module, whose libvirtError is another class.
            if type(err).__name__ != 'libvirtError':
                raise
            message = getattr(err, 'get_error_message', lambda: None)() \
                or str(err)
            if 'busy' in message.lower():
                raise exception.KsmBusy(knob=name) from err
            LOG.warning('libvirt could not set %s (%s); writing sysfs',
                        param, message)
            self._lost()
            self.sysfs.write(name, text)

    def libvirt_values(self):
        """The node memory parameters libvirt reports, or {} without it."""
        if self.connection is None:
            return {}
        return dict(self.connection.getMemoryParameters(0))
