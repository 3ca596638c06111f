"""The machine's KSM knobs, for the tests that touch them.

KSM is global to the machine: :func:`saved` holds the lock every KSM test
(and the KSM benchmark) takes, saves every knob with a reader independent
of the code under test, and restores them afterwards, also on failure.
"""

import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys

from tests.lib import libvirtd

KSM = '/sys/kernel/mm/ksm'
LOCK = '/run/lock/nova-ksm-inject-ksm-tests.lock'
# Every knob the kernel lets root write, restored in this order.
KNOBS = ('advisor_mode', 'pages_to_scan', 'sleep_millisecs',
         'use_zero_pages', 'smart_scan', 'stable_node_chains_prune_millisecs',
         'merge_across_nodes', 'max_page_sharing', 'advisor_max_cpu',
         'advisor_min_pages_to_scan', 'advisor_max_pages_to_scan',
         'advisor_target_scan_time', 'run')
BIN = os.path.dirname(sys.executable)


def read_ksm(name, root=KSM):
    """One KSM file as text; the selected word for advisor_mode."""
    with open(os.path.join(root, name)) as f:
        text = f.read().strip()
    for word in text.split():
        if word.startswith('['):
            return word.strip('[]')
    return text


def read_knobs(root=KSM):
    return {k: read_ksm(k, root) for k in KNOBS
            if os.path.exists(os.path.join(root, k))}


def write_ksm(name, value, root=KSM):
    with open(os.path.join(root, name), 'w') as f:
        f.write(str(value))


def restore_knobs(saved):
    """Write ``saved`` back; unmerge first if a tree knob needs it."""
    if 'advisor_mode' in saved:
        write_ksm('advisor_mode', 'none')
    for name, value in saved.items():
        if name == 'advisor_mode' or read_ksm(name) == value:
            continue
        try:
            write_ksm(name, value)
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            write_ksm('run', 2)
            write_ksm(name, value)
    if 'advisor_mode' in saved:
        write_ksm('advisor_mode', saved['advisor_mode'])
    write_ksm('run', saved['run'])


def ksmd_pid():
    """The pid of the ksmd kernel thread, found by its name in /proc."""
    for name in os.listdir('/proc'):
        try:
            with open('/proc/%s/comm' % name) as f:
                if f.read().strip() == 'ksmd':
                    return int(name)
        except (OSError, ValueError):
            continue
    raise AssertionError('no ksmd thread')


def ksmd_nice():
    """ksmd's nice value, from /proc/<ksmd>/stat (field 19)."""
    with open('/proc/%d/stat' % ksmd_pid()) as f:
        return int(f.read().rsplit(')', 1)[1].split()[16])


def merging_pages(pid):
    """The kernel's count of ``pid``'s merged pages."""
    with open('/proc/%d/ksm_merging_pages' % pid) as f:
        return int(f.read())


@contextlib.contextmanager
def saved():
    """Hold the KSM test lock; save every knob and ksmd's nice value, and
    restore them after."""
    with open(LOCK, 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        knobs, nice = read_knobs(), ksmd_nice()
        try:
            yield knobs
        finally:
            restore_knobs(knobs)
            changed = ksmd_nice()
            if changed != nice:
                os.setpriority(os.PRIO_PROCESS, ksmd_pid(), nice)
        assert read_knobs() == knobs, 'KSM knobs not restored'
        assert changed == nice, 'ksmd left at nice %d (was %d)' % (
            changed, nice)


def tuner_state(state_dir):
    """What the tuner published in its state directory ({} before)."""
    try:
        with open(os.path.join(state_dir, 'tuner')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class TunerProcess(object):
    """A real ``nova-ksm-tuner`` for ``conf`` (a nova.conf with ``[ksm]``),
    logging to ``log``."""

    def __init__(self, conf, log, state_dir):
        self.conf, self.log, self.state_dir = conf + '.tuner', log, state_dir
        # Its own copy: the hook reads ``conf`` and logs elsewhere.
        with open(conf) as f, open(self.conf, 'w') as out:
            out.write(f.read() + '[DEFAULT]\nlog_file = %s\n' % log)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [os.path.join(BIN, 'nova-ksm-tuner'), '--config-file',
             self.conf], stderr=subprocess.DEVNULL)
        libvirtd.wait_for(lambda: tuner_state(self.state_dir), 30,
                 what='the tuner to publish its state')
        return self

    def stop(self):
        """SIGTERM; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def log_text(self):
        with open(self.log) as f:
            return f.read()
