"""The built-in demo of nova-ksm-inject (run through ``tools/demo``).

Builds small guest images in a temporary directory, shows the handler
chain, injects a key, a network config, metadata, an admin password and a
file with the real ``nova-ksm-inject`` command, and proves the result by
reading the image back with debugfs (never by mounting it):

1. a raw MBR-partitioned image through the default chain (img_handlers =
   fuse2fs,guestfs, use_cow_images = False): ext4 served by fuse2fs in a
   sandbox, no kernel mount, timed over ``--runs`` runs (median reported);
2. a qcow2 overlay on a cached base through the same chain (use_cow_images
   = True; qemu-storage-daemon exports it to fuse2fs); the base stays
   unchanged;
3. with ``--with-guestfs``: the same overlay with img_handlers =
   nbd,guestfs, reaching libguestfs after nbd fails (~15 s).

The demo runs as root, and its disks belong to ``nobody``, as nova's
belong to nova: the sandboxed helpers run as a disk's owner, never root.
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PASSWD = ('root:x:0:0:root:/root:/bin/bash\n'
          'user:x:1000:1000::/home/user:/bin/sh\n')
SHADOW = 'root:*:19000:0:99999:7:::\nuser:!:19000:0:99999:7:::\n'
KEY = ('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoDemoDemoDemoDemoDemoDemo'
       ' demo@nova-ksm-inject\n')
NET = [{'name': 'eth0', 'address': '192.0.2.10', 'netmask': '255.255.255.0',
        'gateway': '192.0.2.1', 'broadcast': '192.0.2.255',
        'dns': ['192.0.2.53'], 'use_dhcp': False}]
CLI = os.path.join(os.path.dirname(sys.executable), 'nova-ksm-inject')


OWNER = 'nobody'


def give(path):
    """Hand an image to an unprivileged owner, as nova's are nova's."""
    shutil.chown(path, OWNER, 'nogroup')
    return path


def run(*cmd, quiet=False):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit('demo: %s failed (%d): %s' % (cmd[0], proc.returncode,
                                               proc.stderr.strip()))
    if not quiet and proc.stdout.strip():
        print(proc.stdout.rstrip())
    return proc.stdout


def build_tree(root):
    for d in ('etc', 'root', 'home/user'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    files = {'etc/passwd': (PASSWD, 0o644), 'etc/shadow': (SHADOW, 0o640),
             'etc/os-release': ('ID=debian\nVERSION_ID="12"\n', 0o644),
             'etc/fstab': ('/dev/sda1 / ext4 defaults 0 1\n', 0o644),
             'etc/hostname': ('demo\n', 0o644)}
    for rel, (text, mode) in files.items():
        path = os.path.join(root, rel)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, mode)


def build_raw_image(work, path):
    """A 128 MiB raw disk, MBR, partition 1 = ext4 with the tree."""
    tree = os.path.join(work, 'tree')
    if not os.path.isdir(tree):
        build_tree(tree)
    run('qemu-img', 'create', '-q', '-f', 'raw', path, '128M')
    subprocess.run(['sfdisk', '-q', path], input='label: dos\n2048,,L\n',
                   text=True, check=True)
    run('mkfs.ext4', '-q', '-F', '-d', tree, '-E', 'offset=1048576', path,
        '%dk' % (127 * 1024))


def write_inputs(work):
    inputs = {}
    for name, text in (('key.pub', KEY), ('net.json', json.dumps(NET)),
                       ('password', 'correct horse battery staple\n'),
                       ('motd', 'Welcome to the demo guest\n')):
        inputs[name] = os.path.join(work, name)
        with open(inputs[name], 'w') as f:
            f.write(text)
    return inputs


def write_conf(work, name, handlers, cow):
    path = os.path.join(work, name)
    with open(path, 'w') as f:
        f.write('[DEFAULT]\nimg_handlers = %s\nuse_cow_images = %s\n'
                'instances_path = %s\n[inject]\nstate_dir = %s\n'
                '[guestfs]\nbackend_settings = force_tcg\n'
                % (handlers, cow, work, os.path.join(work, 'state')))
    return path


def inject_cmd(image, conf, inputs, *extra):
    return [CLI, 'inject', image, '--config-file', conf, '--partition', '1',
            '--key-file', inputs['key.pub'], '--net-file', inputs['net.json'],
            '--metadata', 'role=lab', '--metadata', 'class=demo-101',
            '--admin-password-file', inputs['password'],
            '--file', '/etc/motd=' + inputs['motd'], *extra]


def debugfs(image, request):
    return run('debugfs', '-R', request, image + '?offset=1048576', quiet=True)


def verify(raw_image):
    """Read the image back with debugfs, independently of our code."""
    print('\n-- read back with debugfs (no mount) --')
    keys = debugfs(raw_image, 'cat /root/.ssh/authorized_keys')
    assert KEY.strip() in keys, 'key missing'
    for path in ('/root/.ssh', '/root/.ssh/authorized_keys'):
        mode = [line for line in debugfs(raw_image, 'stat ' + path)
                .splitlines() if 'Mode:' in line][0]
        print('%-28s %s' % (path, ' '.join(mode.split()[:6])))
    shadow = debugfs(raw_image, 'cat /etc/shadow').splitlines()
    print('/etc/shadow root entry     %s...' % shadow[0][:24])
    assert shadow[0].startswith('root:$6$') and shadow[1] == SHADOW.split(
        '\n')[1], 'shadow not as expected'
    net = debugfs(raw_image, 'cat /etc/network/interfaces').splitlines()
    eth0 = [line.strip() for line in net if 'eth0' in line or
            'address' in line]
    print('/etc/network/interfaces    %s' % ' | '.join(eth0[:3]))
    print('/meta.js                   %s' % debugfs(raw_image,
                                                    'cat /meta.js').strip())
    print('/etc/motd                  %s' % debugfs(raw_image,
                                                    'cat /etc/motd').strip())
    print('verified: key, net, metadata, admin password, file')


def raw_demo(work, inputs, runs):
    conf = write_conf(work, 'raw.conf', 'fuse2fs,guestfs', False)
    print('== 1. raw partitioned image through the default chain ==')
    run(CLI, 'handlers', '--config-file', conf)
    image = os.path.join(work, 'raw.img')
    build_raw_image(work, image)
    pristine = image + '.pristine'
    shutil.copy(image, pristine)
    times = []
    for _run in range(runs):
        give(shutil.copy(pristine, image))
        # Untimed: written back now, the copy does not compete with the
        # command for the disk.
        os.sync()
        started = time.monotonic()
        out = run(*inject_cmd(image, conf, inputs), quiet=True)
        times.append(time.monotonic() - started)
    print(out.rstrip())
    verify(image)
    print('end-to-end (command start to exit), %d runs: median %.3f s, '
          'min %.3f s, max %.3f s' % (runs, statistics.median(times),
                                      min(times), max(times)))
    return image


def cow_demo(work, inputs, handlers, base_raw):
    base_dir = os.path.join(work, '_base')
    os.makedirs(base_dir, exist_ok=True)
    base = os.path.join(base_dir, 'base.raw')
    build_raw_image(work, base)
    overlay = os.path.join(work, 'overlay-%s.qcow2' % handlers.split(',')[0])
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw',
        overlay)
    give(overlay)
    before = sha256(base)
    conf = write_conf(work, 'cow-%s.conf' % handlers.split(',')[0], handlers,
                      True)
    run(CLI, 'handlers', '--config-file', conf)
    if handlers.startswith('fuse2fs'):
        # What an operator sees when no configured handler can do it.
        proc = subprocess.run(inject_cmd(overlay, conf, inputs, '--format',
                                         'qcow2', '--handlers', 'loop,nbd'),
                              capture_output=True, text=True)
        print('with --handlers loop,nbd (exit %d):\n  %s'
              % (proc.returncode, proc.stderr.strip().splitlines()[-1]))
    # An overlay's format is stated, never taken from its header (a raw
    # disk can be written to look like a qcow2 with a backing file).
    run(*inject_cmd(overlay, conf, inputs, '--format', 'qcow2'))
    flat = overlay + '.raw'
    run('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', overlay, flat)
    verify(flat)
    assert sha256(base) == before, 'backing file changed!'
    print('backing file %s unchanged (sha256 %s...)' % (base, before[:16]))


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.
                                     RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=5,
                        help='timed runs of the raw/loop injection')
    parser.add_argument('--with-guestfs', action='store_true',
                        help='also inject through libguestfs (~15 s)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the work directory')
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='nova-ksm-inject-demo-')
    try:
        inputs = write_inputs(work)
        raw = raw_demo(work, inputs, max(1, args.runs))
        print('\n== 2. qcow2 overlay through the default chain '
              '(copy-on-write) ==')
        cow_demo(work, inputs, 'fuse2fs,guestfs', raw)
        if args.with_guestfs:
            print('\n== 3. qcow2 overlay, nbd fails, guestfs takes over ==')
            cow_demo(work, inputs, 'nbd,guestfs', raw)
        print('\ndemo OK (work dir %s)' % work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
