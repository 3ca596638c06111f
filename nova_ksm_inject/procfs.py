"""The one reader of ``/proc``: processes, their CPU time, memory and KSM.

Small readers in the psutil way: the procfs root is the module-level
:data:`PROC_ROOT`, which tests point at a fake tree (every function also
takes ``proc_root``); OS errors become :class:`NoSuchProcess` or
:class:`AccessDenied` (``raise ... from``); files older kernels lack have
an explicit fallback, and the comments name the kernel that added them.

Readers named for a value (``stat``, ``cmdline``) raise for a process that
is gone; the helpers used while polling many processes (``cpu_seconds``,
``run_seconds``, ``resident_pages``, ``ksm_stat``, ``start_time``, ``running``,
``process_matches``) answer None, 0 or False instead, because processes
exit between ``listdir`` and ``open``.
"""

import collections
import errno
import functools
import os
import re

from nova_ksm_inject import exception

PROC_ROOT = '/proc'
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
# mountinfo's escapes (space, tab, newline, backslash): \ooo octal.
_OCTAL = re.compile(rb'\\([0-7]{3})')
ZOMBIE = 'Z'


class ProcError(exception.NovaKsmInjectError):
    msg_fmt = "Cannot read %(path)s: %(reason)s"


class NoSuchProcess(ProcError):
    msg_fmt = "Process %(pid)s does not exist (%(path)s is gone)"


class AccessDenied(ProcError):
    msg_fmt = ("Permission denied reading %(path)s; run as root or as the "
               "owner of process %(pid)s")


def _root(proc_root):
    """``proc_root``, or the module's (tests may redirect it)."""
    return proc_root or PROC_ROOT


def _path(pid, name, proc_root=None):
    return os.path.join(_root(proc_root), str(pid), name)


def _wrap(func):
    """Map OS errors of a ``func(pid, proc_root=None)`` reader."""
    @functools.wraps(func)
    def wrapper(pid, proc_root=None):
        try:
            return func(pid, proc_root=proc_root)
        except (FileNotFoundError, ProcessLookupError) as err:
            raise NoSuchProcess(pid=pid, path=err.filename) from err
        except PermissionError as err:
            raise AccessDenied(pid=pid, path=err.filename) from err
        except OSError as err:
            if err.errno == errno.ESRCH:
                raise NoSuchProcess(pid=pid, path=err.filename) from err
            raise ProcError(path=err.filename,
                            reason=os.strerror(err.errno or 0)) from err
    return wrapper


def _read(path, binary=False):
    with open(path, 'rb') as f:
        data = f.read()
    return data if binary else data.decode('utf-8', 'replace')


def _read_or_none(path):
    try:
        return _read(path)
    except OSError:
        return None


Stat = collections.namedtuple(
    'Stat', 'pid comm state ppid starttime utime stime cutime cstime nice')
Stat.cpu_seconds = property(
    lambda self: (self.utime + self.stime) / CLOCK_TICKS,
    doc='User plus system CPU seconds.')


@_wrap
def stat(pid, proc_root=None):
    """``/proc/<pid>/stat`` as a :class:`Stat` (times in clock ticks).

    :raises NoSuchProcess, AccessDenied:
    """
    text = _read(_path(pid, 'stat', proc_root))
    # The command name may hold spaces and parentheses: split after it.
    head, _, tail = text.rpartition(')')
    fields = tail.split()
    try:
        # stat(5): state 3, ppid 4, utime 14, stime 15, cutime 16,
        # cstime 17 (children waited for), nice 19, starttime 22.
        return Stat(pid=int(pid), comm=head.partition('(')[2],
                    state=fields[0], ppid=int(fields[1]),
                    utime=int(fields[11]), stime=int(fields[12]),
                    cutime=int(fields[13]), cstime=int(fields[14]),
                    nice=int(fields[16]), starttime=int(fields[19]))
    except (IndexError, ValueError) as err:
        raise ProcError(path=_path(pid, 'stat', proc_root),
                        reason='unexpected format %r' % text[:80]) from err


@_wrap
def cmdline(pid, proc_root=None):
    """The arguments of ``pid`` (empty for kernel threads and zombies)."""
    data = _read(_path(pid, 'cmdline', proc_root))
    return data.split('\0')[:-1] if data.endswith('\0') else (
        data.split('\0') if data else [])


@_wrap
def comm(pid, proc_root=None):
    """The command name (15 bytes at most); Linux 2.6.33."""
    return _read(_path(pid, 'comm', proc_root)).rstrip('\n')


def pids(proc_root=None):
    """Every numeric entry of the procfs root, as ints."""
    try:
        names = os.listdir(_root(proc_root))
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def process_iter(proc_root=None):
    """A :class:`Stat` for every process that still runs when read."""
    for pid in pids(proc_root):
        try:
            yield stat(pid, proc_root=proc_root)
        except ProcError:
            continue  # exited (or hidden) meanwhile


def start_time(pid, proc_root=None):
    """When ``pid`` started, in clock ticks after boot (the ``starttime``
    a reused pid does not share); None when it is gone."""
    try:
        return stat(pid, proc_root=proc_root).starttime
    except ProcError:
        return None


def running(pid, starttime=None, proc_root=None):
    """Whether ``pid`` runs (not a zombie) and, when given, started at
    ``starttime``. The command line is not read: it empties when a process
    lets go of its memory, before it closes its files."""
    try:
        info = stat(pid, proc_root=proc_root)
    except ProcError:
        return False
    return info.state != ZOMBIE and (starttime is None
                                     or info.starttime == starttime)


def process_matches(pid, marker=None, starttime=None, proc_root=None):
    """Whether ``pid`` runs (not a zombie), its command line contains
    ``marker`` and, when given, it started at ``starttime`` (clock ticks
    after boot; guards against a reused pid)."""
    if not running(pid, starttime, proc_root=proc_root):
        return False
    if marker is None:
        return True
    try:
        args = cmdline(pid, proc_root=proc_root)
    except ProcError:
        return False
    return marker in ' '.join(args)


def cpu_seconds(pid, proc_root=None):
    """User plus system CPU seconds of ``pid``; None when it is gone."""
    try:
        return stat(pid, proc_root=proc_root).cpu_seconds
    except ProcError:
        return None


def run_seconds(pid, proc_root=None):
    """Seconds ``pid`` ran on a CPU, to the nanosecond (``schedstat``'s
    first field: the scheduler's own sum, which ``stat``'s clock ticks
    round to 10 ms); None when it is gone or the kernel lacks the file
    (``CONFIG_SCHED_INFO``)."""
    text = _read_or_none(_path(pid, 'schedstat', proc_root))
    try:
        return int(text.split()[0]) / 1e9
    except (AttributeError, IndexError, ValueError):
        return None


def resident_pages(pid, proc_root=None):
    """Resident pages of ``pid`` (``statm``); 0 when it is gone."""
    statm = _read_or_none(_path(pid, 'statm', proc_root))
    try:
        return int(statm.split()[1])
    except (AttributeError, IndexError, ValueError):
        return 0


def ksm_stat(pid, proc_root=None):
    """What KSM did for ``pid``: {key: int or 'yes'/'no'}, or None.

    ``/proc/<pid>/ksm_stat`` appeared in 6.1 (``ksm_rmap_items``), gained
    ``ksm_process_profit`` in 6.4, ``ksm_merging_pages`` and
    ``ksm_zero_pages`` later and ``ksm_mergeable``/``ksm_merge_any`` (with
    colons) in 6.10. Before 6.1 only ``ksm_merging_pages`` (5.19) is
    there; before 5.19 nothing (None: see :func:`has_mergeable_vma`).
    """
    text = _read_or_none(_path(pid, 'ksm_stat', proc_root))
    if text is None:
        merging = _read_or_none(_path(pid, 'ksm_merging_pages', proc_root))
        if merging is None or not merging.strip().isdigit():
            return None
        return {'ksm_merging_pages': int(merging)}
    stats = {}
    for line in text.splitlines():
        key, _, value = line.replace(':', ' ').partition(' ')
        value = value.strip()
        stats[key] = int(value) if value.lstrip('-').isdigit() else value
    return stats


def has_mergeable_vma(pid, proc_root=None):
    """Whether a mapping of ``pid`` has the ``mg`` (MADV_MERGEABLE) flag.

    The fallback for kernels before 5.19, which have no per-process KSM
    file: ``VmFlags`` in ``smaps`` (3.8). Costly for big processes.
    """
    text = _read_or_none(_path(pid, 'smaps', proc_root)) or ''
    return any(line.startswith('VmFlags:') and ' mg' in line
               for line in text.splitlines())


def mergeable_resident_pages(pid, proc_root=None):
    """Resident pages of ``pid``'s mappings with the ``mg`` flag
    (``MADV_MERGEABLE``, in ``smaps``), or None when unreadable. A walk of
    the page tables: milliseconds per GiB."""
    text = _read_or_none(_path(pid, 'smaps', proc_root))
    if text is None:
        return None
    total = rss = 0
    for line in text.splitlines():
        if line.startswith('Rss:'):
            rss = int(line.split()[1])
        elif line.startswith('VmFlags:') and ' mg' in line:
            total += rss
    return total * 1024 // os.sysconf('SC_PAGE_SIZE')


def meminfo(proc_root=None):
    """``/proc/meminfo`` in KiB (``MemAvailable`` needs 3.14).

    :raises ProcError: no readable meminfo.
    """
    path = os.path.join(_root(proc_root), 'meminfo')
    try:
        text = _read(path)
    except OSError as err:
        raise ProcError(path=path, reason=os.strerror(err.errno or 0)) \
            from err
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(':')
        if rest.split() and rest.split()[0].isdigit():
            values[name] = int(rest.split()[0])
    if 'MemAvailable' not in values and 'MemFree' in values:
        # Before 3.14: free plus page cache is the old estimate.
        values['MemAvailable'] = values['MemFree'] + values.get('Cached', 0)
    return values


def memory_pressure(proc_root=None):
    """PSI memory pressure, {'some': avg10, 'full': avg10} in percent, or
    None: ``/proc/pressure/memory`` needs 4.20 and CONFIG_PSI (and reads
    fail with EOPNOTSUPP when booted with ``psi=0``)."""
    text = _read_or_none(os.path.join(_root(proc_root), 'pressure',
                                      'memory'))
    if not text:
        return None
    found = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(' ')
        for item in rest.split():
            key, _, value = item.partition('=')
            if key == 'avg10':
                try:
                    found[kind] = float(value)
                except ValueError:
                    pass
    return found or None


def find_ksmd(proc_root=None):
    """The pid of the ksmd kernel thread, or None (no KSM)."""
    for pid in sorted(pids(proc_root)):
        name = _read_or_none(_path(pid, 'comm', proc_root))
        if name is not None and name.strip() == 'ksmd':
            return pid
    return None


def mount_points(proc_root=None):
    """The mount points this process sees (``self/mountinfo``, field 5).

    mountinfo escapes space, tab, newline and backslash as ``\\ooo``
    octal; the points come back unescaped, as the file system names them.
    """
    path = os.path.join(_root(proc_root), 'self', 'mountinfo')
    with open(path, 'rb') as f:
        lines = f.read().splitlines()
    return [os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]),
                                   line.split()[4]))
            for line in lines if len(line.split()) > 4]

