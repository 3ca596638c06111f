"""Everything together on the real KSM: libvirtd with the hook installed,
nova-ksm-tuner setting knobs through libvirt, two TCG guests merged and
shown by ``ksm status`` under their domain names."""

import json
import os

from tests.functional.ksm import conftest


def test_guests_merge_under_hook_and_tuner(ksm_saved, hooked, libvirtd,
                                           tmp_path):
    daemon = libvirtd(hooked.hooks_dir, ksm='real')
    conf = hooked.write(enabled='auto', policy='adaptive',
                        connection_uri=daemon.uri, poll_interval=0.5,
                        restore_on_exit='true')
    tuner = conftest.TunerProcess(conf, str(tmp_path / 'tuner.log'),
                                  hooked.state_dir).start()
    try:
        domains = [daemon.start_domain(mib=64) for _ in range(2)]
        names = {d.name() for d in domains}
        # The hook (inside libvirtd's namespace) started ksmd ...
        assert conftest.read_ksm('run') == '1'
        # ... and the tuner boosted for the new guests.
        conftest.wait_for(lambda: 'KSM boost: guest started' in
                          tuner.log_text(), 30, what='the tuner to boost')

        def merged_guests():
            proc = conftest.cli('nova-ksm-inject', '--config-file', conf,
                                'ksm', 'status', '--json', '--window', '0.1')
            assert proc.returncode == 0, proc.stderr
            status = json.loads(proc.stdout)
            found = {g['name']: g['merging_pages'] for g in status['guests']
                     if g['name'] in names}
            return status if (set(found) == names
                              and all(found.values())) else None
        status = conftest.wait_for(merged_guests, 60, interval=0.5,
                                   what='both guests to merge pages')
        assert status['pages_sharing'] > 0
        assert status['tuner']['state'] in ('boost', 'settled')

        for domain in domains:
            domain.destroy()
        assert not [g for g in os.listdir(os.path.join(hooked.state_dir,
                                                       'guests'))
                    if not g.startswith('.')]
    finally:
        assert tuner.stop() == 0
    # restore_on_exit: the tuner put back what was there before.
    assert conftest.read_knobs() == ksm_saved
    log = tuner.log_text()
    assert 'Restoring KSM settings' in log
