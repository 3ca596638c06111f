"""``nova-ksm-inject cleanup`` end to end against a temporary state dir."""

import json
import os

from nova_ksm_inject.cmd import main
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import state


def test_cleanup_says_what_it_skipped_and_fails(tmp_path, capsys, as_root):
    state_dir = state.StateDir(str(tmp_path / 'state')).ensure()
    precious = tmp_path / 'precious'
    precious.mkdir()
    planted = os.path.join(state_dir.journals, 'x' + state.RECORD_SUFFIX)
    with open(planted, 'w') as f:
        json.dump({'version': state.RECORD_VERSION, 'pid': 2 ** 22 + 1,
                   'steps': [{'kind': 'tmpdir', 'path': str(precious)}]}, f)
    config = tmp_path / 'nova.conf'
    config.write_text('[inject]\nstate_dir = %s\n' % state_dir.path)
    try:
        assert main.main(['cleanup', '--config-file', str(config)]) == 1
    finally:
        CONF.reset()
    out = capsys.readouterr().out
    assert out.startswith('skipped %s: foreign or corrupt record' % planted)
    assert precious.is_dir() and os.path.exists(planted)


def test_cleanup_with_nothing_left(tmp_path, capsys, as_root):
    config = tmp_path / 'nova.conf'
    config.write_text('[inject]\nstate_dir = %s\n' % (tmp_path / 'state'))
    try:
        assert main.main(['cleanup', '--config-file', str(config)]) == 0
    finally:
        CONF.reset()
    assert capsys.readouterr().out == 'nothing to clean up in %s\n' % (
        tmp_path / 'state')
