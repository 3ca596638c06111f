"""The ``[ksm]`` options as one plain value object.

The hook, the tuner and the commands take a :class:`KsmSettings` instead
of reading CONF themselves, so unit tests build one directly. Only the
top of the stack (the console scripts, the privsep entrypoints, the nova
driver) knows the global CONF and passes it to
:meth:`KsmSettings.from_conf`.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class KsmSettings(object):
    """What nova.conf says about KSM (see nova_ksm_inject/conf/ksm.py)."""

    enabled: str = 'auto'
    policy: str = 'adaptive'
    pages_to_scan: int = 100
    sleep_millisecs: int = 20
    merge_across_nodes: bool = True
    use_zero_pages: bool = False
    max_page_sharing: int = 256
    cpu_budget_percent: int = 70
    boost_ksmd_nice: int = None  # None: ksmd's priority is left alone
    restore_on_exit: bool = False
    connection_uri: str = 'qemu:///system'
    state_dir: str = '/run/nova-ksm-inject/ksm'
    strict: bool = False
    hook_log_file: str = None
    poll_interval: float = 1.0
    maintenance_scan_seconds: int = 300
    guest_record_grace_seconds: int = 120
    settled_cpu_percent: float = 1.0
    pressure_cpu_budget_percent: float = 10.0
    pressure_memavailable_percent: float = 20.0
    unmerge_on_loss: bool = False

    @classmethod
    def from_conf(cls, conf):
        """Read ``[ksm]`` from ``conf``, a ``ConfigOpts`` with the options
        of :mod:`nova_ksm_inject.conf.ksm` registered and loaded."""
        group = conf.ksm
        values = {f.name: getattr(group, f.name)
                  for f in dataclasses.fields(cls)}
        values['enabled'] = values['enabled'].lower()
        values['policy'] = values['policy'].lower()
        return cls(**values)

    def static_knobs(self):
        """The operator's knob values, as written to sysfs."""
        return {
            'pages_to_scan': self.pages_to_scan,
            'sleep_millisecs': self.sleep_millisecs,
            'merge_across_nodes': int(self.merge_across_nodes),
            'use_zero_pages': int(self.use_zero_pages),
            'max_page_sharing': self.max_page_sharing,
        }

    def tree_knobs(self):
        """Knobs every policy applies (the scan rate aside)."""
        knobs = self.static_knobs()
        del knobs['pages_to_scan']
        del knobs['sleep_millisecs']
        return knobs

    def wants_run(self, mergeable_guests):
        """Whether ksmd should run given the number of mergeable guests."""
        if self.enabled == 'true':
            return True
        if self.enabled == 'false':
            return False
        return mergeable_guests > 0
