"""``[ksm]`` options: Kernel Samepage Merging on the hypervisor.

The names ``enabled``, ``policy``, ``pages_to_scan``, ``sleep_millisecs``,
``merge_across_nodes``, ``use_zero_pages``, ``max_page_sharing``,
``cpu_budget_percent``, ``restore_on_exit`` and ``connection_uri`` are a
contract other tools rely on: keep them.
"""

from oslo_config import cfg

ksm_group = cfg.OptGroup(
    'ksm',
    title='Kernel Samepage Merging',
    help='KSM on the hypervisor: the libvirt hook, the tuner and the '
         '``nova-ksm-inject ksm`` commands read these options.')

ksm_opts = [
    cfg.StrOpt('enabled',
               default='auto',
               choices=[
                   ('true', 'ksmd runs whenever the hook, the tuner or '
                            '``ksm apply`` act'),
                   ('false', 'they stop ksmd (run=0, merged pages stay '
                             'merged)'),
                   ('auto', 'ksmd runs only while the host has guests '
                            'whose memory can be merged'),
               ],
               ignore_case=True,
               help="""
Whether KSM runs on this hypervisor.

Guests whose domain XML has ``<nosharepages/>`` or hugepage backing cannot
be merged and do not count for ``auto``.

Related options:

* ``policy``
"""),
    cfg.StrOpt('policy',
               default='adaptive',
               choices=[
                   ('static', 'the knob values below, as configured'),
                   ('adaptive', 'nova-ksm-tuner scans hard while there is '
                                'new memory to merge and backs off when '
                                'sharing plateaus, within '
                                '``cpu_budget_percent``'),
                   ('kernel', "the kernel's advisor (Linux 6.8+, "
                              "advisor_mode=scan-time) sets pages_to_scan; "
                              "static where the kernel has none"),
               ],
               ignore_case=True,
               help="""
How ksmd's scan rate is chosen while KSM runs.

``adaptive`` needs ``nova-ksm-tuner`` running; without it the hook falls
back to ``static``.

Related options:

* ``cpu_budget_percent``
* ``pages_to_scan``, ``sleep_millisecs``
"""),
    cfg.IntOpt('pages_to_scan',
               default=100,
               min=1,
               max=2 ** 32 - 1,
               help="""
Pages ksmd scans per wake-up (``static`` policy).

The kernel default 100 merges a large host only after hours; 1000000000
merges within seconds but keeps one core busy forever.
"""),
    cfg.IntOpt('sleep_millisecs',
               default=20,
               min=0,
               max=60000,
               help="Milliseconds ksmd sleeps between batches (``static`` "
                    "policy; the kernel caps it at one minute)."),
    cfg.BoolOpt('merge_across_nodes',
                default=True,
                help="""
Whether pages from different NUMA nodes may be merged.

The kernel only accepts a change while no page is shared; nova-ksm-inject
changes it then, or after ``nova-ksm-inject ksm apply --unmerge``.
"""),
    cfg.BoolOpt('use_zero_pages',
                default=False,
                help="Merge empty pages with the kernel's zero page "
                     "instead of with each other."),
    cfg.IntOpt('max_page_sharing',
               default=256,
               min=2,
               max=2 ** 31 - 1,
               help="Most pages that may share one KSM page (changed only "
                    "while no page is shared, like merge_across_nodes)."),
    cfg.IntOpt('cpu_budget_percent',
               default=70,
               min=1,
               max=100,
               help="""
ksmd CPU ceiling, in percent of one core.

``adaptive`` keeps ksmd at or below it while scanning hard after a guest
starts (the default matches the kernel advisor's own ceiling); once
sharing plateaus ksmd costs far less. ``kernel`` passes it to the advisor
as ``advisor_max_cpu``.

The ceiling trades merge time for CPU: on the benchmark's grid, 100 met
the time target (1.5x a full-speed ksmd's) in 14 of 15 workloads against
7 at 70, and spent 10% more ksmd CPU. Over 75 the tuner shortens ksmd's
sleeps, not its batches, so a boost still ends within about 50 ms.
"""),
    cfg.IntOpt('boost_ksmd_nice',
               min=-20,
               max=19,
               help="""
ksmd's nice value while the ``adaptive`` tuner boosts. Unset (the
default): the tuner never changes ksmd's priority.

The kernel starts ksmd at nice 5, at which a boost got 41-64% of a core
under load, not ``cpu_budget_percent``: the budget is a ceiling the tuner
keeps with ksmd's sleeps, and 0 makes it the share ksmd gets. That is a
trade: on the benchmark's grid, nice 0 merged large arrivals sooner (a
wave of two 1.8 GiB guests: t95 5.0 s against 7.5 s) but slowed guests
filling their memory, so boosts took more full scans (ksmd CPU +4.3 s
over 15 workloads), and on the whole the grid met fewer targets. The
tuner only ever raises ksmd's priority, and puts the nice value it found
back when the boost ends, when it stops, and when it starts again after
it was killed.

Related options:

* ``cpu_budget_percent``
"""),
    cfg.BoolOpt('restore_on_exit',
                default=False,
                help="""
Restore the KSM settings saved before nova-ksm-inject first changed them
when ``nova-ksm-tuner`` stops.

When false the tuner leaves ksmd at its calm maintenance rate.
"""),
    cfg.StrOpt('connection_uri',
               default='qemu:///system',
               help="""
libvirt URI used by the tuner and the commands to set the knobs libvirt
supports (pages_to_scan, sleep_millisecs, merge_across_nodes) through its
node memory parameters. Empty: always write sysfs. The libvirt hook never
connects to libvirt.
"""),
    cfg.StrOpt('state_dir',
               default='/run/nova-ksm-inject/ksm',
               help="""
Where the hook records guests and events for the tuner, the tuner publishes
its state, and the KSM settings found before the first change are saved.
"""),
    cfg.BoolOpt('strict',
                default=False,
                help="""
Make the libvirt hook exit non-zero when it cannot set up KSM.

libvirt then refuses to start the guest. Leave false in production: KSM
must never stop a guest from starting.
"""),
    cfg.StrOpt('hook_log_file',
               help="""
File the libvirt hook logs to. Unset: syslog (``/dev/log``) when present,
else standard error (libvirt discards it when the hook succeeds).
"""),
    cfg.ListOpt('mergeable_projects',
                default=[],
                help="""
Projects (IDs) whose guests' memory KSM may merge.

Merging identical pages across guests is a side channel: a guest can tell,
by timing its own writes, whether another guest holds a given page (Dedup
Est Machina, IEEE S&P 2016, and later cross-VM attacks). nova-compute
gives every guest of another project ``<memoryBacking><nosharepages/>``,
so QEMU never offers its memory to KSM. KSM merges across all mergeable
guests of a host, so the listed projects' guests share pages with each
other: list projects that trust each other.

Possible values:

* empty (the default): the guests of every project may merge
* project IDs: only the guests of these projects may merge

Related options:

* flavor extra spec ``ksm:merge`` and image property ``ksm_merge``: a
  guest merges only if its project is allowed here, and neither its flavor
  nor its image says false; a value that is not a boolean (true or false)
  fails the boot, the rebuild or the resize
"""),
    cfg.FloatOpt('poll_interval',
                 default=1.0,
                 min=0.1,
                 max=60.0,
                 help="Seconds between two looks of the tuner at the "
                      "hook's events and the KSM counters."),
    cfg.FloatOpt('settled_cpu_percent',
                 default=1.0,
                 min=0.1,
                 max=100.0,
                 help="""
ksmd CPU ceiling once sharing has settled, in percent of one core.

The ``adaptive`` tuner scans all mergeable memory once per
``maintenance_scan_seconds`` when that costs less, and more slowly when it
would cost more (big hosts), with ``smart_scan`` (Linux 6.7+) skipping
pages that never merge. The cost is measured from ksmd's CPU time, so it
holds whatever the host's memory.

Related options:

* ``maintenance_scan_seconds``
* ``pressure_cpu_budget_percent``
"""),
    cfg.FloatOpt('pressure_cpu_budget_percent',
                 default=10.0,
                 min=0.1,
                 max=100.0,
                 help="""
ksmd CPU ceiling after sharing settled while the host is short of memory,
in percent of one core.

Short of memory: ``MemAvailable`` under ``pressure_memavailable_percent``
of RAM, or processes stalling on memory (``/proc/pressure/memory``).
Without pressure and without new guests the tuner stays at
``settled_cpu_percent``.

Related options:

* ``pressure_memavailable_percent``
* ``settled_cpu_percent``
"""),
    cfg.FloatOpt('pressure_memavailable_percent',
                 default=20.0,
                 min=0.0,
                 max=100.0,
                 help="""
The host is short of memory when ``MemAvailable`` is under this share of
RAM (ksmtuned's threshold is 20%). 0 leaves only PSI memory stalls.

Related options:

* ``pressure_cpu_budget_percent``
* ``unmerge_on_loss``
"""),
    cfg.BoolOpt('unmerge_on_loss',
                default=False,
                help="""
Unmerge every KSM page when merging does not pay.

The ``adaptive`` tuner stops ksmd when KSM's profit (``general_profit``,
or the same estimated on kernels before 6.4) stays negative over full
scans: guests with nothing in common cost KSM metadata and CPU. With this
option it also unmerges (``run = 2``), which frees that metadata, but
only when ``MemAvailable`` stays above ``pressure_memavailable_percent``
of RAM once every merged page is a private copy again.
"""),
    cfg.IntOpt('guest_record_grace_seconds',
               default=120,
               min=5,
               max=3600,
               help="""
How long a guest the libvirt hook recorded may have no QEMU process.

The hook records a guest at ``prepare``, before libvirt starts QEMU; the
tuner matches records to running QEMU processes by the domain UUID or name
on their command line. A record whose QEMU process ran and exited (its
``release`` event was lost: libvirtd killed, a hook timed out) is
forgotten at once; one that never had a process is forgotten after this
many seconds.

Related options:

* ``enabled`` (``auto`` stops ksmd when no recorded guest is left)
"""),
    cfg.IntOpt('maintenance_scan_seconds',
               default=300,
               min=10,
               max=86400,
               help="""
Once sharing plateaus, the ``adaptive`` tuner scans all mergeable memory
once per this many seconds, to catch pages that became identical later.
"""),
]


def register_opts(conf):
    conf.register_group(ksm_group)
    conf.register_opts(ksm_opts, group=ksm_group)


def list_opts():
    return {ksm_group: ksm_opts}
