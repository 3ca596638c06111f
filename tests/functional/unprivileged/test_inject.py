"""Injection as deployed by default: a user with no sudo rule at all.

The README's injection command, run as that user, writes a key, a
network config, metadata, the admin password and a file into an ext4
qcow2 overlay and a raw disk through the default ``img_handlers``
(``fuse2fs`` first), verified with debugfs. A run SIGKILLed at any step
leaves nothing that ``nova-ksm-inject cleanup``, run as the same user,
does not remove. The hostile images of ``disk/files/hostile.py`` hold as
they do for root.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import tempfile
import textwrap

import pytest

from nova_ksm_inject.disk import inject
from tests.fs_snapshot import snapshot
from tests.functional.conftest import Debugfs
from tests.functional.conftest import sh
from tests.functional.disk.files import hostile
from tests.functional.disk.test_loop import assert_full_injection
from tests.functional.disk.test_loop import KEY
from tests.functional.disk.test_loop import PASSWORD


def readme_args(home):
    """The README's command's options, with files the user can read."""
    files = {'key': KEY + '\n', 'net': 'auto eth0\niface eth0 inet dhcp\n',
             'password': PASSWORD, 'motd': 'hello from the test\n',
             'ini': '[lab]\nx = 1\n'}
    for name, text in files.items():
        with open(os.path.join(home.dir, name), 'w') as f:
            f.write(text)
        os.chmod(os.path.join(home.dir, name), 0o644)
    at = {name: os.path.join(home.dir, name) for name in files}
    return ['--key-file', at['key'], '--net-file', at['net'],
            '--metadata', 'role=lab', '--metadata', 'seat=7',
            '--admin-password-file', at['password'],
            '--file', '/etc/motd=' + at['motd'],
            '--file', '/opt/lab/deep/config.ini=' + at['ini']]


def test_readme_command_into_a_qcow2_overlay(home):
    base, offset = home.images.raw_mbr('_base/mbr.raw')
    overlay = home.give(home.images.qcow2_overlay(base, 'disk.qcow2'))
    proc = home.run('inject', overlay, '--format', 'qcow2', '--partition',
                    '2', '--trusted-backing-dir', home.base, '--json',
                    *readme_args(home))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result['handler'] == 'fuse2fs'
    assert_full_injection(Debugfs(home.images.to_raw(overlay), offset))


def test_readme_command_into_a_raw_disk(home):
    image = home.give(home.images.raw_fs('disk.raw'))
    proc = home.run('inject', image, '--format', 'raw', '--partition', '0',
                    '--no-cow', *readme_args(home))
    assert proc.returncode == 0, proc.stderr
    assert 'with handler fuse2fs' in proc.stdout
    assert_full_injection(Debugfs(image))


def test_an_image_the_user_cannot_write_is_refused_in_one_line(home):
    image = home.images.raw_fs('roots.raw')  # root's, 0644
    before = sh('sha256sum', image)
    proc = home.run('inject', image, '--format', 'raw', '--partition', '0',
                    '--no-cow', '--handlers', 'fuse2fs',
                    *readme_args(home))
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        'nova-ksm-inject: error: No image handler could mount')
    assert sh('sha256sum', image) == before


# Run as the user: SIGKILL itself right after step STEP (the n-th call of
# a function on the way in), like an OOM kill or a crashed nova-compute.
KILLED = textwrap.dedent('''
    import os, signal, sys
    from nova_ksm_inject.cmd import common
    common.load_config([sys.argv[1]])
    from nova_ksm_inject.disk import api, fuse, inject, sandbox
    target, nth = sys.argv[4], int(sys.argv[5])
    calls = {}

    def dying(owner, name):
        real = getattr(owner, name)
        def call(*args, **kwargs):
            result = real(*args, **kwargs)
            calls[name] = calls.get(name, 0) + 1
            if name == target and calls[name] == nth:
                print('killed after', name, nth, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        setattr(owner, name, call)
    dying(fuse, 'mount')
    dying(sandbox.Sandbox, 'start')
    dying(sandbox.Sandbox, 'run')
    dying(inject, 'inject_data')
    if target == 'write':
        real_write = os.write
        def write(fd, data):
            print('killed while writing', flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        inject.inject_data = api.inject.inject_data
        os.write = write
    api.inject_data(sys.argv[2], inject.InjectionRequest(key='k'),
                    fmt='qcow2', partition=2, use_cow=True,
                    trusted_dirs=[sys.argv[3]])
    print('not killed', flush=True)
''')

STEPS = [('mount', 1), ('start', 1), ('run', 1), ('mount', 2),
         ('start', 2), ('write', 0)]


@pytest.mark.parametrize('target,nth', STEPS,
                         ids=['%s%d' % s for s in STEPS])
def test_killed_at_any_step_cleanup_as_the_user_leaves_nothing(home, target,
                                                                nth):
    base, _offset = home.images.raw_mbr('_base/mbr.raw')
    overlay = home.give(home.images.qcow2_overlay(base, 'disk.qcow2'))
    proc = subprocess.run(home.argv(
        os.path.join(home.bin, 'python'), '-c', KILLED, home.conf, overlay,
        home.base, target, str(nth)), capture_output=True, text=True,
        cwd='/')
    # runuser reports its child's SIGKILL as 128 + 9.
    assert proc.returncode == 128 + signal.SIGKILL, proc.stdout + proc.stderr
    assert 'killed' in proc.stdout
    out = home.run('cleanup')
    assert out.returncode == 0, out.stdout + out.stderr
    assert not home.leftovers()
    sh('qemu-img', 'info', '-f', 'qcow2', overlay)  # not locked any more
    if target == 'mount' and nth == 1:
        assert 'undone fuse' in out.stdout


@pytest.fixture(scope='module')
def hostile_run(venv, tmp_path_factory):
    from tests.functional.unprivileged.conftest import Home
    home = Home(venv, 'hostile')
    # Short: a link target over 60 bytes is not a fast link, which the
    # debugfs reader of hostile.py expects.
    decoy = tempfile.mkdtemp(prefix='nkd-', dir='/var/tmp')
    os.chmod(decoy, 0o755)
    hostile.build_tree(decoy)
    decoy_before = snapshot(decoy)

    def as_the_user(scenario, image):
        home.give(image)
        proc = subprocess.run(home.argv(
            os.path.join(home.bin, 'python'), '-c', DRIVER, home.conf,
            image, pickle.dumps(scenario.request.to_dict()).hex()),
            capture_output=True, text=True, cwd='/')
        assert proc.returncode == 0, proc.stderr
        return [inject.ItemResult(**i) for i in json.loads(proc.stdout)]
    outcomes = hostile.run_all(home.dir, as_the_user, decoy=decoy)
    yield outcomes, decoy, decoy_before
    leaked = home.leftovers()
    shutil.rmtree(home.dir, ignore_errors=True)
    shutil.rmtree(decoy, ignore_errors=True)
    assert not leaked, 'leaked: %s' % leaked


DRIVER = textwrap.dedent('''
    import json, pickle, sys
    from nova_ksm_inject.cmd import common
    common.load_config([sys.argv[1]])
    from nova_ksm_inject.disk import api, request
    req = request.InjectionRequest.from_dict(
        pickle.loads(bytes.fromhex(sys.argv[3])))
    result = api.inject_data(sys.argv[2], req, partition=0, use_cow=False,
                             handler_names=['fuse2fs'])
    print(json.dumps([i.to_dict() for i in result.items]))
''')


class TestHostileImagesAsTheUser(hostile.HostileChecks):

    @pytest.fixture
    def injected(self, hostile_run):
        return hostile_run[0]

    def test_host_decoy_untouched(self, hostile_run):
        _outcomes, decoy, before = hostile_run
        assert snapshot(decoy) == before
