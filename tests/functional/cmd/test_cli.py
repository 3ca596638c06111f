"""The ``nova-ksm-inject`` command as an operator runs it (root).

Happy path end to end, and the unhappy paths an operator hits: each must
print exactly one line on stderr naming the cause and the fix, exit
non-zero, print no traceback and leave nothing behind.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.functional.conftest import Debugfs

CLI = os.path.join(os.path.dirname(sys.executable), 'nova-ksm-inject')
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICliTestKey cli@ci'


@pytest.fixture
def env(tmp_path):
    conf = tmp_path / 'nova.conf'
    conf.write_text('[DEFAULT]\nimg_handlers = loop,nbd,guestfs\n'
                    'use_cow_images = False\n[inject]\nstate_dir = %s\n'
                    % (tmp_path / 'state'))
    key = tmp_path / 'key.pub'
    key.write_text(KEY + '\n')
    password = tmp_path / 'password'
    password.write_text('s3cret-pass\n')
    local = tmp_path / 'motd'
    local.write_text('cli motd\n')
    net = tmp_path / 'net.json'
    net.write_text(json.dumps([{'name': 'eth0', 'use_dhcp': True}]))
    return {'conf': str(conf), 'key': str(key), 'password': str(password),
            'motd': str(local), 'net': str(net), 'tmp': tmp_path}


def cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True)


def assert_one_line_error(proc, code, *words):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    # Warnings may come first (a handler that failed and was passed over);
    # the error itself is one line, the last one.
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines
              if line.startswith('nova-ksm-inject: error: ')]
    assert errors == lines[-1:], proc.stderr
    assert 'Traceback' not in proc.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_inject_everything_through_the_command(images, env, no_leaks):
    image = images.raw_fs()
    proc = cli('inject', image, '--config-file', env['conf'], '--partition',
               '0', '--key-file', env['key'], '--net-file', env['net'],
               '--metadata', 'role=lab', '--admin-password-file',
               env['password'], '--file', '/etc/motd=' + env['motd'],
               '--json')
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result['handler'] == 'loop'
    assert result['format'] == 'raw'
    reader = Debugfs(image)
    assert KEY in reader.cat('/root/.ssh/authorized_keys')
    assert 'iface eth0 inet dhcp' in reader.cat('/etc/network/interfaces')
    assert json.loads(reader.cat('/meta.js')) == {'role': 'lab'}
    assert reader.cat('/etc/motd') == 'cli motd\n'
    assert reader.cat('/etc/shadow').startswith('root:$6$')
    assert 's3cret' not in proc.stdout + proc.stderr


def test_human_output_shows_every_handler(images, env, no_leaks):
    image = images.raw_fs()
    proc = cli('inject', image, '--config-file', env['conf'], '--partition',
               '0', '--key-file', env['key'], '--handlers', 'nbd,loop')
    assert proc.returncode == 0, proc.stderr
    assert 'nbd' in proc.stdout and 'modprobe nbd' in proc.stdout
    assert 'with handler loop' in proc.stdout


def test_unknown_handler(images, env, no_leaks):
    proc = cli('inject', images.raw_fs(), '--config-file', env['conf'],
               '--key-file', env['key'], '--handlers', 'loop,nbdd')
    assert_one_line_error(proc, 2, 'nbdd', 'guestfs', 'qsd')


def test_unknown_handler_in_config_fails_at_startup(env, no_leaks):
    with open(env['conf'], 'a') as f:
        f.write('[DEFAULT]\nimg_handlers = loop,lopo\n')
    proc = cli('handlers', '--config-file', env['conf'])
    assert_one_line_error(proc, 2, 'lopo')


def test_missing_image(env, no_leaks):
    proc = cli('inject', '/nonexistent/disk.img', '--config-file',
               env['conf'], '--key-file', env['key'])
    assert_one_line_error(proc, 1, '/nonexistent/disk.img')


def test_corrupt_qcow2(images, env, no_leaks):
    image = images.path('corrupt.qcow2')
    with open(image, 'wb') as f:
        f.write(b'QFI\xfb' + os.urandom(4096))
    proc = cli('inject', image, '--config-file', env['conf'], '--key-file',
               env['key'], '--handlers', 'qsd')
    assert_one_line_error(proc, 1, image)


def test_vmdk_is_refused(images, env, no_leaks):
    image = images.path('disk.vmdk')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'vmdk', image, '8M'],
                   check=True)
    proc = cli('inject', image, '--config-file', env['conf'], '--key-file',
               env['key'])
    assert_one_line_error(proc, 1, 'vmdk')


def test_missing_key_file(images, env, no_leaks):
    proc = cli('inject', images.raw_fs(), '--config-file', env['conf'],
               '--key-file', '/nonexistent/key.pub')
    assert_one_line_error(proc, 2, '/nonexistent/key.pub')


def test_nothing_to_inject(images, env, no_leaks):
    proc = cli('inject', images.raw_fs(), '--config-file', env['conf'])
    assert_one_line_error(proc, 2, 'nothing to inject')


def test_out_of_range_option(env, no_leaks):
    with open(env['conf'], 'a') as f:
        f.write('[libvirt]\ninject_partition = -7\n')
    proc = cli('handlers', '--config-file', env['conf'])
    assert_one_line_error(proc, 2, 'inject_partition')


def test_missing_config_file(no_leaks):
    proc = cli('handlers', '--config-file', '/nonexistent/nova.conf')
    assert_one_line_error(proc, 2, '/nonexistent/nova.conf')


def test_handlers_reports_why(env, no_leaks):
    with open(env['conf'], 'a') as f:
        f.write('[DEFAULT]\nimg_handlers = loop,nbd\nuse_cow_images = True\n')
    proc = cli('handlers', '--config-file', env['conf'])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    loop = [line for line in lines if ' loop ' in line][0]
    nbd = [line for line in lines if ' nbd ' in line][0]
    assert 'usable' in loop and 'use_cow_images' in loop
    assert 'UNAVAILABLE' in nbd and 'modprobe nbd' in nbd
    assert 'guestfs' in proc.stdout and 'qsd' in proc.stdout  # not configured


def test_help_answers_questions():
    proc = cli('inject', '--help')
    assert proc.returncode == 0
    for word in ('--trusted-backing-dir', 'copy-on-write', 'Exit status',
                 '--partition'):
        assert word in proc.stdout
