"""The kernel's KSM knobs and counters under ``/sys/kernel/mm/ksm``.

Every file is read as text: most hold a number, ``advisor_mode`` holds a
list of words with the selected one in brackets (``[none] scan-time``),
``general_profit`` may be negative. Files this kernel lacks are simply
absent from what :meth:`KsmSysfs.read_all` returns (``use_zero_pages``
appeared in 4.11, ``general_profit`` and ``ksm_zero_pages`` in 6.1/6.5,
``smart_scan`` and the ``advisor_*`` files in 6.8, ``pages_scanned`` in
6.7). Writes are validated against the ranges the kernel accepts.
"""

import errno
import os

from oslo_log import log as logging

from nova_ksm_inject import exception

LOG = logging.getLogger(__name__)

KSM_ROOT = '/sys/kernel/mm/ksm'

U32_MAX = 2 ** 32 - 1
INT_MAX = 2 ** 31 - 1
ULONG_MAX = 2 ** 64 - 1

# Writable knobs: (min, max) for numbers or a tuple of words. Listed in the
# order a restore writes them: the advisor off first (it rejects manual
# pages_to_scan), the tree-shape knobs before run, run last.
KNOBS = {
    'advisor_mode': ('none', 'scan-time'),
    'pages_to_scan': (0, U32_MAX),
    'sleep_millisecs': (0, 60000),
    'use_zero_pages': (0, 1),
    'smart_scan': (0, 1),
    'stable_node_chains_prune_millisecs': (0, U32_MAX),
    'merge_across_nodes': (0, 1),
    'max_page_sharing': (2, INT_MAX),
    'advisor_max_cpu': (1, 100),
    'advisor_min_pages_to_scan': (1, ULONG_MAX),
    'advisor_max_pages_to_scan': (1, ULONG_MAX),
    'advisor_target_scan_time': (1, ULONG_MAX),
    'run': (0, 2),
}

# The kernel only accepts a new value for these while no page is shared.
TREE_KNOBS = ('merge_across_nodes', 'max_page_sharing')

RUN_STOP, RUN_MERGE, RUN_UNMERGE = 0, 1, 2


def parse(text):
    """A sysfs value as int, selected word, or stripped text."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    for word in text.split():
        if word.startswith('[') and word.endswith(']'):
            return word[1:-1]
    return text


def validate(name, value):
    """Return ``value`` in the form written to knob ``name``.

    :raises ConfigError: unknown knob or value outside the kernel's range.
    """
    if name not in KNOBS:
        raise exception.ConfigError(
            reason='%s is not a KSM knob; knobs: %s'
                   % (name, ', '.join(sorted(KNOBS))))
    allowed = KNOBS[name]
    if isinstance(allowed[0], str):
        if str(value) not in allowed:
            raise exception.ConfigError(
                reason='KSM %s must be one of %s, got %r'
                       % (name, ', '.join(allowed), value))
        return str(value)
    if isinstance(value, bool):
        value = int(value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not allowed[0] <= number <= allowed[1]:
        raise exception.ConfigError(
            reason='KSM %s must be an integer from %d to %d, got %r'
                   % (name, allowed[0], allowed[1], value))
    return str(number)


class KsmSysfs(object):
    """Reader and writer of one KSM sysfs directory.

    :param root: the directory; tests point it at a fake tree.
    """

    def __init__(self, root=None):
        self.root = root or KSM_ROOT

    def path(self, name):
        return os.path.join(self.root, name)

    def available(self):
        return os.path.isfile(self.path('run'))

    def require(self):
        """:raises KsmUnavailable: this kernel or container has no KSM."""
        if not self.available():
            raise exception.KsmUnavailable(
                reason='%s does not exist' % self.path('run'))

    def has(self, name):
        return os.path.isfile(self.path(name))

    def read(self, name):
        """One file, parsed; None when this kernel lacks it."""
        try:
            with open(self.path(name)) as f:
                return parse(f.read())
        except FileNotFoundError:
            return None

    def read_int(self, name, default=0):
        value = self.read(name)
        return value if isinstance(value, int) else default

    def read_all(self):
        """Every readable file of the directory, parsed."""
        self.require()
        values = {}
        for name in sorted(os.listdir(self.root)):
            path = self.path(name)
            if not os.path.isfile(path):
                continue
            try:
                with open(path) as f:
                    values[name] = parse(f.read())
            except OSError as err:
                # Some files are write-only or vanish on hotplug.
                LOG.debug('Cannot read %s: %s', path, err)
        return values

    def check_writable(self, names):
        """Fail before writing anything if any knob cannot be written.

        :raises KsmUnavailable: no KSM directory.
        :raises KsmNotWritable: read-only mount or missing permission.
        """
        self.require()
        readonly = os.statvfs(self.root).f_flag & os.ST_RDONLY
        for name in names:
            if readonly:
                raise exception.KsmNotWritable(
                    knob=name, reason='%s is mounted read-only' % self.root)
            if not os.access(self.path(name), os.W_OK):
                raise exception.KsmNotWritable(
                    knob=name,
                    reason='no write permission on %s' % self.path(name))

    def write(self, name, value):
        """Write one knob after validating it.

        :raises KsmBusy: the kernel refused because pages are shared.
        :raises KsmNotWritable: any other refusal.
        """
        text = validate(name, value)
        LOG.debug('Writing %s to %s', text, self.path(name))
        try:
            with open(self.path(name), 'w') as f:
                f.write(text)
        except OSError as err:
            if err.errno == errno.EBUSY:
                raise exception.KsmBusy(knob=name) from err
            raise exception.KsmNotWritable(
                knob=name, reason='%s: %s' % (self.path(name),
                                              os.strerror(err.errno or 0))
            ) from err

    def writable_state(self):
        """The current value of every writable knob this kernel has."""
        values = self.read_all()
        return {name: values[name] for name in KNOBS if name in values}
