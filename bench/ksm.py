"""KSM benchmark: the adaptive tuner against the policies operators use.

Every policy (:mod:`ksm_policies`) is run on the real kernel, one after
the other, against the same :class:`~ksm_scenario.Scenario`: waves of
synthetic guests that arrive, run and leave. Between policies KSM is
reset (``run = 2`` unmerges everything, then the kernel's defaults); the
KSM settings found at the start are restored at the end, also on failure
or Ctrl-C. The whole run holds the KSM test lock, so it never overlaps a
KSM test. :mod:`ksm_sampler` samples the memory saved and ksmd's CPU
time every half second; :mod:`ksm_metrics` turns them into numbers and
:mod:`ksm_report` into a table, JSON and a plot.
"""

import contextlib
import dataclasses
import fcntl
import os
import platform
import shutil
import tempfile
import threading
import time

from oslo_log import log as logging

from bench import ksm_adaptive
from bench import ksm_launcher
from bench import ksm_metrics
from bench import ksm_oracle
from bench import ksm_policies
from bench import ksm_preflight
from bench import ksm_sampler
from bench import ksm_scenario
from bench import ksm_targets
from nova_ksm_inject import procfs
from nova_ksm_inject.ksm import host as ksm_host
from nova_ksm_inject.ksm import sysfs as ksm_sysfs
from tests.lib import ksm_guest

LOG = logging.getLogger(__name__)

LOCK_PATH = '/run/lock/nova-ksm-inject-ksm-tests.lock'
POLICIES = {cls.name: cls for cls in (
    ksm_policies.KernelDefault, ksm_policies.StaticMax,
    ksm_policies.Ksmtuned, ksm_policies.Advisor, ksm_adaptive.Adaptive,
    ksm_oracle.Oracle)}
ORDER = ('default', 'static-max', 'ksmtuned', 'advisor', 'adaptive')


@contextlib.contextmanager
def ksm_lock(path, progress):
    """Hold the KSM test lock (None: the caller holds it already)."""
    if path is None:
        yield
        return
    with open(path, 'a') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress('Waiting for %s: a KSM test or benchmark holds it'
                     % path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def reset(host, timeout=120.0):
    """Unmerge everything, then the kernel's defaults with ksmd stopped."""
    host.sysfs.write('run', ksm_sysfs.RUN_UNMERGE)
    deadline = time.monotonic() + timeout
    while (host.sysfs.read_int('pages_shared')
           or host.sysfs.read_int('pages_sharing')):
        if time.monotonic() > deadline:
            raise ksm_preflight.BenchRefused(
                reason='KSM still shares pages %d s after run=2' % timeout)
        time.sleep(0.1)
    host.apply(ksm_policies.KERNEL_DEFAULTS)


# Available memory the ballast leaves once every guest runs and KSM merged
# what it can, in percent of RAM: under the 20% of ksmtuned and of the
# tuner's pressure_memavailable_percent, so the host stays short of memory
# even after merging (which frees memory).
PRESSURE_AVAILABLE_PERCENT = 15.0


def ballast_mib(scenario, info=None):
    """Memory to hold so that the host stays short of memory: once every
    guest runs and its identical pages are merged, available memory is
    :data:`PRESSURE_AVAILABLE_PERCENT` of RAM, but never under
    ``ksm_preflight.BALLAST_FLOOR_MIB`` + 512 (the ballast gives memory
    back below the floor: guests that arrive unmerged need it)."""
    info = info or procfs.meminfo()
    total = info['MemTotal'] // 1024
    target = max(ksm_preflight.BALLAST_FLOOR_MIB + 512,
                 int(total * PRESSURE_AVAILABLE_PERCENT / 100))
    peak = scenario.peak_guests
    merged_mib = (scenario.expected_saving(peak) * ksm_guest.PAGE_SIZE
                  // (1024 * 1024))
    guests = peak * scenario.guest_mib - merged_mib
    return max(0, info['MemAvailable'] // 1024 - guests - target)


def make_launcher(scenario, workdir, policy, progress):
    """Synthetic guest processes, or real guests under a private libvirtd
    (whose libvirt runs our hook for the adaptive policy)."""
    if scenario.kind != ksm_scenario.REAL_GUESTS:
        return ksm_launcher.GuestLauncher(scenario, workdir)
    from bench import ksm_realguest
    hook_conf = getattr(policy, 'conf', None)
    policy.hooks_from_libvirt = hook_conf is not None
    return ksm_realguest.RealGuestLauncher(
        scenario, policy.workdir, hook_conf, progress=progress,
        hook_cache=getattr(policy, 'hook_cache', None))


def run_policy(name, scenario, host, settings, workdir, progress,
               options=None):
    """Run ``scenario`` under policy ``name`` (made with ``options``,
    keyword arguments of its class); the raw results."""
    policy_dir = os.path.join(workdir, name)
    os.makedirs(policy_dir)
    reset(host)
    policy = POLICIES[name](host, policy_dir, settings, **(options or {}))
    launcher = make_launcher(scenario, workdir, policy, progress)
    runner = ksm_scenario.ScenarioRunner(scenario, launcher, policy)
    ballast = ballast_mib(scenario) if scenario.pressure else 0
    sampler, halt, disturbing = None, threading.Event(), []
    load = [ksm_sampler.loadavg()]
    try:
        launcher.start()
        if ballast:
            progress('  holding %d MiB of ballast (memory pressure)'
                     % ballast)
            launcher.spawn_ballast(ballast, ksm_preflight.BALLAST_FLOOR_MIB)
        disturbing = ksm_sampler.noise(launcher)
        policy.start()
        t0 = time.monotonic()
        sampler = ksm_sampler.Sampler(host.sysfs, procfs.find_ksmd(),
                                      launcher.pids, t0, state=policy.state)
        sampler.start()
        runner.run(t0, halt)
        disturbing = ksm_sampler.noise(launcher, disturbing)
        load.append(ksm_sampler.loadavg())
    finally:
        halt.set()
        columns = sampler.finish() if sampler else None
        runner.join()
        launcher.stop_all()
        policy.stop()
        reset(host)
    return {'samples': columns, 'events': runner.log,
            'report': policy.report(), 'noise': disturbing,
            'loadavg': load, 'ballast_mib': ballast,
            'booted': getattr(launcher, 'boot_times', None)}


def restore(host, saved, progress):
    """Put back the KSM settings found at the start."""
    host.sysfs.write('run', ksm_sysfs.RUN_UNMERGE)
    deferred = host.restore(saved)
    if deferred:
        host.apply(saved, unmerge=True)
    if host.save() != saved:
        progress('WARNING: KSM settings differ from the saved ones: %s '
                 'saved, %s now' % (saved, host.save()))


def ksmd_nice():
    """(ksmd's pid, its nice value), or None without ksmd."""
    pid = procfs.find_ksmd()
    return None if pid is None else (
        pid, os.getpriority(os.PRIO_PROCESS, pid))


def restore_nice(found, progress):
    """ksmd back at the nice value :func:`ksmd_nice` found (a tuner killed
    during a boost leaves it raised, and the next policy would run with
    it)."""
    if found is None or ksmd_nice() == found:
        return
    progress('  ksmd left at nice %d; putting it back at %d'
             % (ksmd_nice()[1], found[1]))
    os.setpriority(os.PRIO_PROCESS, *found)


def host_info():
    info = procfs.meminfo()
    return {'kernel': platform.release(), 'cpus': os.cpu_count(),
            'mem_total_mib': info['MemTotal'] // 1024,
            'page_size': ksm_guest.PAGE_SIZE,
            # The kernel's: every policy runs at it (the tuner raises it
            # while it boosts only if [ksm] boost_ksmd_nice is set).
            'ksmd_nice': (ksmd_nice() or (None, None))[1]}


@contextlib.contextmanager
def session(sysfs, lock_path, progress):
    """Hold the KSM lock, refuse competing controllers, and restore the
    KSM settings and ksmd's nice value found (also on failure); yields
    (host, workdir)."""
    with ksm_lock(lock_path, progress):
        competing = ksm_preflight.competing_controllers()
        if competing:
            raise ksm_preflight.BenchRefused(
                reason='%s already tune(s) KSM; stop it first'
                % ', '.join(competing))
        host = ksm_host.KsmHost(sysfs=sysfs)
        saved, nice = host.save(), ksmd_nice()
        workdir = tempfile.mkdtemp(prefix='nova-ksm-bench-')
        try:
            yield host, workdir
        finally:
            restore(host, saved, progress)
            restore_nice(nice, progress)
            shutil.rmtree(workdir, ignore_errors=True)


def run(scenario, policies, settings, lock_path=LOCK_PATH, sysfs=None,
        progress=LOG.info):
    """Run every policy of ``policies`` (in order); the results dict."""
    began = time.monotonic()
    runs = run_policies(scenario, policies, settings, lock_path=lock_path,
                        sysfs=sysfs, progress=progress)
    return dict(results(scenario, runs, settings),
                wall_seconds=round(time.monotonic() - began, 1))


def run_policies(scenario, policies, settings, lock_path=LOCK_PATH,
                 sysfs=None, progress=LOG.info, options=None):
    """Run every policy of ``policies`` (in order, each made with
    ``options[name]``); their raw results by name."""
    sysfs = sysfs or ksm_sysfs.KsmSysfs()
    ksm_preflight.preflight(policies, sysfs, scenario)
    options = options or {}
    runs = {}
    for i, name in enumerate(policies):
        progress('[%d/%d] %s, %s: %d guests of %d MiB over %.0f s'
                 % (i + 1, len(policies), scenario.kind, name,
                    scenario.total_guests, scenario.guest_mib,
                    scenario.duration))
        # The lock is held per policy: a KSM test waits minutes, not an
        # hour, and finds the KSM settings as they were.
        with session(sysfs, lock_path, progress) as (host, workdir):
            runs[name] = run_policy(name, scenario, host, settings,
                                    workdir, progress, options.get(name))
        for pid_name in runs[name]['noise']:
            progress('  WARNING: other mergeable process %(name)s '
                     '(pid %(pid)d) ran too' % pid_name)
    return runs


def results(scenario, runs, settings):
    """Numbers for every policy run, from their samples."""
    key = ksm_metrics.SAVED
    if scenario.kind == ksm_scenario.REAL_GUESTS:
        key = ksm_metrics.FREED
        for raw in runs.values():
            ksm_metrics.add_freed(raw['samples'])
    static = runs.get(ksm_metrics.STATIC)
    if static:
        phases = ksm_metrics.phases_from_log(static['events'],
                                             scenario.duration)
        levels = ksm_metrics.achievable_levels(
            phases, static['samples']['t'], static['samples'][key])
        source = ksm_metrics.STATIC
    else:
        levels = [scenario.expected_saving(wave * scenario.guests)
                  for wave in range(1, len(scenario.phases()) + 1)]
        source = 'theoretical'
    policies = {}
    for name, raw in runs.items():
        phases = ksm_metrics.phases_from_log(raw['events'],
                                             scenario.duration)
        summary = ksm_metrics.summarize(raw['samples'], phases, levels,
                                        scenario.duration,
                                        ksm_guest.PAGE_SIZE, key)
        policies[name] = dict(raw, summary=summary)
    return {
        'scenario': dict(dataclasses.asdict(scenario),
                         expected_pages=[scenario.expected_saving(
                             w * scenario.guests)
                             for w in range(1, len(scenario.phases()) + 1)]),
        'host': host_info(),
        'achievable': {'source': source, 'pages': levels},
        'saving': key,
        'policies': policies,
        'targets': ksm_targets.for_scenario(scenario, policies, settings),
    }
