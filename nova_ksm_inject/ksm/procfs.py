"""What ``/proc`` tells about KSM: ksmd's CPU time and per-process merging.

``/proc/<pid>/ksm_merging_pages`` appeared in Linux 5.19 and
``/proc/<pid>/ksm_stat`` in 6.1 (``ksm_mergeable`` and ``ksm_merge_any``
lines in 6.10); older kernels simply report fewer processes. The procfs
root is a parameter so that unit tests use a fake tree.
"""

import os

PROC_ROOT = '/proc'
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def _root(proc_root):
    """``proc_root``, or the module's (tests may redirect it)."""
    return proc_root or PROC_ROOT


def _read(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except OSError:
        # Processes exit between listdir and open: that is not an error.
        return None


def pids(proc_root=None):
    """Every numeric entry of the procfs root, as ints."""
    try:
        names = os.listdir(_root(proc_root))
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def find_ksmd(proc_root=None):
    """The pid of the ksmd kernel thread, or None."""
    for pid in sorted(pids(proc_root)):
        comm = _read(os.path.join(_root(proc_root), str(pid), 'comm'))
        if comm is not None and comm.strip() == 'ksmd':
            return pid
    return None


def cpu_seconds(pid, proc_root=None):
    """User plus system CPU seconds of ``pid`` (None when it is gone)."""
    stat = _read(os.path.join(_root(proc_root), str(pid), 'stat'))
    if not stat:
        return None
    # The command name may hold spaces and parentheses: split after it.
    fields = stat[stat.rfind(')') + 2:].split()
    try:
        # utime and stime are fields 14 and 15 of stat(5).
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (IndexError, ValueError):
        return None


def resident_pages(pid, proc_root=None):
    """Resident pages of ``pid`` (0 when it is gone)."""
    statm = _read(os.path.join(_root(proc_root), str(pid), 'statm'))
    try:
        return int(statm.split()[1])
    except (AttributeError, IndexError, ValueError):
        return 0


class KsmdCpu(object):
    """ksmd's CPU use between two calls of :meth:`sample`.

    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock, proc_root=None):
        self.clock = clock
        self.proc_root = proc_root
        self.pid = find_ksmd(proc_root)
        self.last = None

    def total(self):
        """ksmd's CPU seconds since boot (0 when there is no ksmd)."""
        if self.pid is None:
            return 0.0
        return cpu_seconds(self.pid, self.proc_root) or 0.0

    def sample(self):
        """Percent of one core ksmd used since the previous sample."""
        now, total = self.clock(), self.total()
        last, self.last = self.last, (now, total)
        if last is None or now <= last[0]:
            return None
        return 100.0 * (total - last[1]) / (now - last[0])


def ksm_stat(pid, proc_root=None):
    """``/proc/<pid>/ksm_stat`` as {key: int or 'yes'/'no'}, or None."""
    base = os.path.join(_root(proc_root), str(pid))
    text = _read(os.path.join(base, 'ksm_stat'))
    stats = {}
    if text is None:
        merging = _read(os.path.join(base, 'ksm_merging_pages'))
        if merging is None or not merging.strip().isdigit():
            return None
        return {'ksm_merging_pages': int(merging)}
    for line in text.splitlines():
        # 6.10 writes "ksm_mergeable: yes", older lines have no colon.
        key, _, value = line.replace(':', ' ').partition(' ')
        value = value.strip()
        stats[key] = int(value) if value.lstrip('-').isdigit() else value
    return stats


def is_mergeable(stats):
    """Whether a process has memory ksmd may merge."""
    if not stats:
        return False
    return (stats.get('ksm_mergeable') == 'yes'
            or stats.get('ksm_merge_any') == 'yes'
            or stats.get('ksm_rmap_items', 0) > 0
            or stats.get('ksm_merging_pages', 0) > 0)


def mergeable_processes(proc_root=None):
    """{pid: ksm_stat} of every process with mergeable memory."""
    found = {}
    for pid in pids(proc_root):
        stats = ksm_stat(pid, proc_root)
        if is_mergeable(stats):
            found[pid] = stats
    return found


class MergeableWatcher(object):
    """Tracks mergeable processes cheaply, poll after poll.

    A process asks for merging some time after it starts (qemu once it
    has allocated guest RAM), so each :meth:`poll` reads ``ksm_stat`` of
    pids younger than ``young_polls`` polls only, and of every pid once
    per ``rescan_every`` polls.
    """

    def __init__(self, proc_root=None, rescan_every=10, young_polls=5):
        self.proc_root = proc_root
        self.rescan_every = rescan_every
        self.young_polls = young_polls
        self.mergeable = {}
        self._first_seen = {}
        self._polls = 0

    def poll(self):
        """Returns the pids that became mergeable since the last poll."""
        live = set(pids(self.proc_root))
        now = self._polls
        self._polls += 1
        full = now % self.rescan_every == 0
        self._first_seen = {pid: self._first_seen.get(pid, now)
                            for pid in live}
        for pid in set(self.mergeable) - live:
            del self.mergeable[pid]
        new = set()
        for pid, seen in self._first_seen.items():
            if not full and now - seen >= self.young_polls:
                continue
            stats = ksm_stat(pid, self.proc_root)
            if not is_mergeable(stats):
                self.mergeable.pop(pid, None)
                continue
            if pid not in self.mergeable:
                new.add(pid)
            self.mergeable[pid] = stats
        return new


def process_name(pid, proc_root=None):
    """The libvirt domain name of a qemu process, else its command name."""
    base = os.path.join(_root(proc_root), str(pid))
    cmdline = _read(os.path.join(base, 'cmdline')) or ''
    args = cmdline.split('\0')
    for i, arg in enumerate(args[:-1]):
        if arg == '-name':
            return _domain_name(args[i + 1])
    return (_read(os.path.join(base, 'comm')) or '').strip() or str(pid)


def _domain_name(value):
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
