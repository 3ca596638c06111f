"""Two real Debian guests, booting under libvirt with our hook and the
tuner, get part of their memory merged by the real kernel KSM.

The guest disk is the benchmark's: built once with debootstrap from this
machine's apt source and cached (``bench/guest_image.py``, about a minute
the first time); each guest boots the host's Debian kernel from its own
qcow2 overlay, under TCG. The kernel's own counters are the verifier:
``/proc/<qemu pid>/ksm_merging_pages`` of each guest's QEMU and
``pages_sharing``.
"""

import os

from nova_ksm_inject.ksm import processes
from tests.functional.ksm import conftest
from tests.lib import guest_image

GUEST_MIB = 384
MERGED_MIB = 16  # each guest: at least this much of its memory merged


def qemu_pid(name):
    for pid, guest in processes.qemu_guests().items():
        if guest.name == name:
            return pid
    return None


def test_two_debian_guests_merge_under_the_tuner(ksm_saved, hooked, libvirtd,
                                                 tmp_path):
    base = guest_image.cached_image(progress=print)
    daemon, tuner = conftest.real_ksm_with_tuner(hooked, libvirtd, tmp_path)
    try:
        names = []
        for i in range(2):
            disk = guest_image.overlay(base, str(tmp_path / ('g%d.qcow2'
                                                             % i)))
            domain = daemon.start_domain(
                mib=GUEST_MIB, boot=guest_image.boot_args(), disk=disk,
                console=str(tmp_path / ('g%d.console' % i)))
            names.append(domain.name())
        pids = [conftest.wait_for(lambda n=n: qemu_pid(n), 30,
                                  what='QEMU of %s' % n) for n in names]
        # The hook (in libvirtd's namespace) started ksmd for them.
        assert conftest.read_ksm('run') == '1'

        def merged():
            pages = [conftest.merging_pages(pid) for pid in pids]
            return min(pages) * 4096 >= MERGED_MIB * 1024 * 1024 and pages
        pages = conftest.wait_for(merged, 180, interval=1,
                                  what='KSM to merge %d MiB of each guest'
                                  % MERGED_MIB)
        assert int(conftest.read_ksm('pages_sharing')) > 0
        state = conftest.tuner_state(hooked.state_dir)
        assert state['guests'] >= 2 and state['profit_bytes'] > 0
        print('\nmerged pages per guest: %s; tuner %s (%s)'
              % (pages, state['state'], state['reason']))
    finally:
        assert tuner.stop() == 0
    assert conftest.read_knobs() == ksm_saved
    log = tuner.log_text()
    assert 'KSM boost: guest started' in log
    assert os.path.exists(base)
