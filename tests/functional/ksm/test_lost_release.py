"""Guest records that outlive their guests.

Real TCG guests under a private libvirtd with the hook installed, on the
real kernel KSM, with nova-ksm-tuner running. Then the hook's release
path is cut (the shim drops ``stopped`` and ``release`` events, as when
libvirtd is killed or a hook times out) and the guests are destroyed:
ksmd must stop within a few seconds of the last QEMU process leaving,
from the kernel's own ``run`` file.
"""

import os
import stat
import time

from tests.functional.ksm import conftest

DROP_RELEASE = '''#!/bin/sh
# Test: lose every stopped/release event, pass the rest on.
case "$2" in stopped|release) exit 0 ;; esac
exec %s "$@"
'''
STOP_WITHIN = 5.0


def cut_release_path(hooks_dir):
    """Put a shim that loses release events in front of ours."""
    shim = os.path.join(hooks_dir, 'qemu.d', 'nova-ksm-inject')
    # Outside qemu.d: libvirt runs every executable file in there.
    real = os.path.join(hooks_dir, 'nova-ksm-inject.real')
    os.rename(shim, real)
    with open(shim, 'w') as f:
        f.write(DROP_RELEASE % real)
    os.chmod(shim, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)


def qemu_pids(names):
    found = {}
    for name in os.listdir('/proc'):
        try:
            with open('/proc/%s/cmdline' % name, 'rb') as f:
                args = f.read().split(b'\0')
        except (OSError, ValueError):
            continue
        for guest in names:
            if b'guest=%s,' % guest.encode() in b' '.join(args):
                found[int(name)] = guest
    return found


def test_lost_release_events_do_not_keep_ksmd_running(
        ksm_saved, hooked, libvirtd, tmp_path):
    daemon, tuner = conftest.real_ksm_with_tuner(hooked, libvirtd, tmp_path)
    try:
        domains = [daemon.start_domain(mib=64) for _ in range(2)]
        names = [d.name() for d in domains]
        pids = conftest.wait_for(
            lambda: len(qemu_pids(names)) == 2 and qemu_pids(names), 30,
            what='both QEMU processes')
        assert conftest.read_ksm('run') == '1'

        def counted_once():
            # A hook record and its QEMU process are one guest.
            others = conftest.mergeable_pids() - set(pids)
            return conftest.tuner_state(hooked.state_dir).get('guests') == \
                2 + len(others)
        conftest.wait_for(counted_once, 15, what='the tuner to count 2 guests')

        cut_release_path(hooked.hooks_dir)
        for domain in domains:
            domain.destroy()
        conftest.wait_for(lambda: not qemu_pids(names), 30,
                          what='the QEMU processes to exit')
        gone = time.monotonic()
        # The hook never heard of the stops.
        log = hooked.log_text()
        for name in names:
            assert 'libvirt started begin of guest %s' % name in log
            assert 'release end of guest %s' % name not in log

        others = conftest.mergeable_pids()
        if others:
            # Another engineer's mergeable process keeps KSM busy: then
            # only our two guests must be forgotten.
            conftest.wait_for(
                lambda: conftest.tuner_state(hooked.state_dir).get('guests')
                <= len(others), STOP_WITHIN, what='the tuner to forget them')
        else:
            conftest.wait_for(lambda: conftest.read_ksm('run') == '0',
                              STOP_WITHIN, interval=0.05,
                              what='ksmd to stop (run=0)')
            print('\nksmd stopped %.2f s after the last guest left'
                  % (time.monotonic() - gone))
        assert conftest.tuner_state(hooked.state_dir)['guests'] <= len(others)
        assert [r for r in os.listdir(os.path.join(hooked.state_dir,
                                                   'guests'))
                if not r.startswith('.')] == []
    finally:
        assert tuner.stop() == 0
    assert conftest.read_knobs() == ksm_saved
    log = tuner.log_text()
    for name in names:
        assert 'Forgetting guest %s' % name in log
    assert 'is gone and no release event came' in log
