"""The processes KSM works for, and ksmd itself, as /proc shows them.

Everything is read through :mod:`nova_ksm_inject.procfs`. A *mergeable*
process has memory ksmd may merge (``/proc/<pid>/ksm_stat``, 6.1+, or
``ksm_merging_pages``, 5.19+; before 5.19 the ``mg`` flag in ``smaps`` of
QEMU processes). A *QEMU guest* is a process whose command line carries
QEMU's ``-name`` (libvirt always passes ``-name guest=NAME,...`` and
``-uuid UUID``): that is how hook records are matched to the guests that
really run.
"""

import dataclasses
import os

from nova_ksm_inject import procfs


def is_mergeable(stats):
    """Whether ``ksm_stat`` values say a process has mergeable memory."""
    if not stats:
        return False
    return (stats.get('ksm_mergeable') == 'yes'
            or stats.get('ksm_merge_any') == 'yes'
            or stats.get('ksm_rmap_items', 0) > 0
            or stats.get('ksm_merging_pages', 0) > 0)


def mergeable_stats(pid, proc_root=None):
    """``ksm_stat`` of ``pid`` when it has mergeable memory, else None."""
    stats = procfs.ksm_stat(pid, proc_root)
    if stats is None and _looks_like_qemu(pid, proc_root) and \
            procfs.has_mergeable_vma(pid, proc_root):
        # Before 5.19 the kernel has no per-process KSM counters.
        return {'ksm_mergeable': 'yes'}
    return stats if is_mergeable(stats) else None


def _looks_like_qemu(pid, proc_root=None):
    try:
        return procfs.comm(pid, proc_root=proc_root).startswith('qemu')
    except procfs.ProcError:
        return False


def _every_process(reader, proc_root=None):
    """{pid: reader(pid)} for every process where it is not None."""
    found = {}
    for pid in procfs.pids(proc_root):
        value = reader(pid, proc_root)
        if value is not None:
            found[pid] = value
    return found


def mergeable_processes(proc_root=None):
    """{pid: ksm_stat} of every process with mergeable memory."""
    return _every_process(mergeable_stats, proc_root)


@dataclasses.dataclass(frozen=True)
class QemuGuest(object):
    """A running QEMU process and the libvirt domain it serves."""

    pid: int
    name: str
    uuid: str = None


def qemu_guest(pid, proc_root=None):
    """The :class:`QemuGuest` of ``pid``, or None when it is not QEMU."""
    try:
        args = procfs.cmdline(pid, proc_root=proc_root)
    except procfs.ProcError:
        return None
    if not args or 'qemu' not in os.path.basename(args[0]):
        return None
    options = dict(zip(args[1:-1], args[2:], strict=True))
    if '-name' not in options:
        return None
    return QemuGuest(pid=pid, name=domain_name(options['-name']),
                     uuid=options.get('-uuid'))


def qemu_guests(proc_root=None):
    """{pid: QemuGuest} of every QEMU process running a named guest."""
    return _every_process(qemu_guest, proc_root)


def process_name(pid, proc_root=None):
    """The libvirt domain name of a qemu process, else its command name."""
    try:
        args = procfs.cmdline(pid, proc_root=proc_root)
    except procfs.ProcError:
        args = []
    for i, arg in enumerate(args[:-1]):
        if arg == '-name':
            return domain_name(args[i + 1])
    try:
        return procfs.comm(pid, proc_root=proc_root) or str(pid)
    except procfs.ProcError:
        return str(pid)


def domain_name(value):
    """NAME from libvirt's ``guest=NAME,debug-threads=on`` (',,' = ',')."""
    if not value.startswith('guest='):
        return value.split(',', 1)[0]
    value = value[len('guest='):]
    name, i = [], 0
    while i < len(value):
        if value[i] == ',':
            if value[i + 1:i + 2] != ',':
                break
            i += 1
        name.append(value[i])
        i += 1
    return ''.join(name)


class KsmdCpu(object):
    """ksmd's CPU use between two calls of :meth:`sample`.

    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock, proc_root=None):
        self.clock = clock
        self.proc_root = proc_root
        self.pid = procfs.find_ksmd(proc_root)
        self.last = None
        # One source for every reading (a delta never mixes the two):
        # schedstat where the kernel has it, else stat's clock ticks (a
        # boost's first window then needs a quarter second; scanrate.py).
        self._exact = self.pid is not None and procfs.run_seconds(
            self.pid, proc_root) is not None
        self.resolution = 1e-9 if self._exact else 1.0 / procfs.CLOCK_TICKS

    def total(self):
        """ksmd's CPU seconds since boot (0 when there is no ksmd), to
        :attr:`resolution` seconds."""
        if self.pid is None:
            return 0.0
        if self._exact:
            return procfs.run_seconds(self.pid, self.proc_root) or 0.0
        return procfs.cpu_seconds(self.pid, self.proc_root) or 0.0

    def sample(self):
        """Percent of one core ksmd used since the previous sample."""
        now, total = self.clock(), self.total()
        last, self.last = self.last, (now, total)
        if last is None or now <= last[0]:
            return None
        return 100.0 * (total - last[1]) / (now - last[0])


class KsmdPriority(object):
    """ksmd's nice value: read and set through ``getpriority(2)`` and
    ``setpriority(2)`` (root: CAP_SYS_NICE), or through the injected
    ``get(pid)`` and ``set(pid, nice)`` of a unit test.

    The kernel starts ksmd at nice 5. While guests fill their memory the
    scheduler then gives it less than the tuner's budget (measured: 41-64%
    of a core against 66.5%; doc/source/reference/performance.rst).
    """

    def __init__(self, pid, get=None, set=None):
        self.pid = pid
        self._get = get or (lambda p: os.getpriority(os.PRIO_PROCESS, p))
        self._set = set or (
            lambda p, nice: os.setpriority(os.PRIO_PROCESS, p, nice))

    def get(self):
        """ksmd's nice value; :raises OSError: it cannot be read."""
        return self._get(self.pid)

    def set(self, nice):
        """:raises OSError: not allowed (no CAP_SYS_NICE), or no ksmd."""
        self._set(self.pid, nice)


class MergeableWatcher(object):
    """Tracks mergeable processes and QEMU guests cheaply, poll after poll.

    A process asks for merging some time after it starts (QEMU once it
    has allocated guest RAM), and libvirt's child becomes QEMU only when
    it execs. So each :meth:`poll` reads ``ksm_stat`` and the command line
    of pids younger than ``young_polls`` polls only, and of every pid once
    per ``rescan_every`` polls.
    """

    def __init__(self, proc_root=None, rescan_every=10, young_polls=5):
        self.proc_root = proc_root
        self.rescan_every = rescan_every
        self.young_polls = young_polls
        self.mergeable = {}
        self.qemu = {}
        self._first_seen = {}
        self._polls = 0

    def poll(self):
        """Returns the pids that became mergeable since the last poll."""
        live = set(procfs.pids(self.proc_root))
        now = self._polls
        self._polls += 1
        full = now % self.rescan_every == 0
        self._first_seen = {pid: self._first_seen.get(pid, now)
                            for pid in live}
        for known in (self.mergeable, self.qemu):
            for pid in set(known) - live:
                del known[pid]
        new = set()
        for pid, seen in self._first_seen.items():
            if not full and now - seen >= self.young_polls:
                continue
            self._look_at(pid, new)
        return new

    def _look_at(self, pid, new):
        guest = qemu_guest(pid, self.proc_root)
        if guest is None:
            self.qemu.pop(pid, None)
        else:
            self.qemu[pid] = guest
        stats = mergeable_stats(pid, self.proc_root)
        if stats is None:
            self.mergeable.pop(pid, None)
            return
        if pid not in self.mergeable:
            new.add(pid)
        self.mergeable[pid] = stats
