"""The nbd handler's allocation, wait and disconnect logic, on a fake sysfs.

This host has no nbd driver, so a real /dev/nbdN can never be connected
here: the kernel side cannot run on this machine. Device discovery,
locking, stale detection, the connection and partition waits and the
disconnects are driven through a fake ``/sys/block`` + ``/dev`` tree, a
fake clock and a fake ``qemu-nbd`` (stand-ins for the kernel), and the
exact ``qemu-nbd --connect`` command line is asserted (the whole backing
chain by descriptor, no name from a header). What *can* run here, nbd
failing for real and the chain moving on, is in
tests/functional/disk/test_nbd.py.
"""

import dataclasses
import os
import re
import subprocess
import sys
import textwrap

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import procfs
from nova_ksm_inject import utils
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import nbd

IMAGE = disk_image.ImageInfo('/inst/disk', 'qcow2', 2 ** 30,
                             (('/base/root.raw', 'raw'),))
QEMU_NBD_PID = 5000


class FakeKernel:
    """A fake sysfs/dev tree plus the qemu-nbd and process table it implies.

    ``connect_after`` fake seconds after ``qemu-nbd --connect``, the device
    shows a pid and a size (and the partitions in ``partitions``).
    """

    def __init__(self, root, devices=2, module=True, max_part=16,
                 connect_after=0.3, partitions=(1, 2)):
        self.sysfs = os.path.join(root, 'sys')
        self.dev = os.path.join(root, 'dev')
        os.makedirs(os.path.join(self.sysfs, 'block'))
        os.makedirs(self.dev)
        if module:
            params = os.path.join(self.sysfs, 'module', 'nbd', 'parameters')
            os.makedirs(params)
            for name, value in (('nbds_max', devices),
                                ('max_part', max_part)):
                with open(os.path.join(params, name), 'w') as f:
                    f.write('%d\n' % value)
        for number in range(devices if module else 0):
            self.add_device(number)
        self.now = 0.0
        self.connect_after = connect_after
        self.partitions = partitions
        self.pending = []
        self.commands = []
        self.kwargs = []
        self.inherited = []  # per command: {fd: the file it names}
        self.live = {}  # pid -> command line

    def add_device(self, number):
        os.makedirs(os.path.join(self.sysfs, 'block', 'nbd%d' % number))
        open(os.path.join(self.dev, 'nbd%d' % number), 'w').close()

    def block(self, name, *parts):
        return os.path.join(self.sysfs, 'block', name, *parts)

    def connect(self, name, pid, cmdline, partitions=()):
        with open(self.block(name, 'pid'), 'w') as f:
            f.write('%d\n' % pid)
        with open(self.block(name, 'size'), 'w') as f:
            f.write('2097152\n')
        for number in partitions:
            os.makedirs(self.block(name, '%sp%d' % (name, number)))
            open(os.path.join(self.dev, '%sp%d' % (name, number)),
                 'w').close()
        if cmdline is not None:
            self.live[pid] = cmdline

    def disconnect(self, name):
        for attr in ('pid', 'size'):
            if os.path.exists(self.block(name, attr)):
                os.unlink(self.block(name, attr))

    # -- stand-ins injected into the handler --------------------------------

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        for when, name, cmdline in list(self.pending):
            if self.now >= when:
                self.pending.remove((when, name, cmdline))
                self.connect(name, QEMU_NBD_PID, cmdline, self.partitions)

    def execute(self, *cmd, **kwargs):
        self.commands.append(cmd)
        self.kwargs.append(kwargs)
        self.inherited.append({fd: os.readlink('/proc/self/fd/%d' % fd)
                               for fd in kwargs.get('pass_fds', ())})
        name = os.path.basename(cmd[2])
        if cmd[:2] == ('qemu-nbd', '--connect'):
            self.pending.append((self.now + self.connect_after, name,
                                 ' '.join(cmd)))
        elif cmd[:2] == ('qemu-nbd', '--disconnect'):
            self.disconnect(name)
        return '', ''

    def process_matches(self, pid, marker=None):
        cmdline = self.live.get(pid)
        return cmdline is not None and (marker is None or marker in cmdline)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    fake = FakeKernel(str(tmp_path / 'host'))
    install(fake, monkeypatch)
    return fake


def install(fake, monkeypatch):
    monkeypatch.setattr(utils, 'execute', fake.execute)
    monkeypatch.setattr(nbd.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(procfs, 'process_matches', fake.process_matches)
    mounted = fake.mounted = []

    def mount_device(device, mountpoint, journal):
        journal.push('mount', undo_now=lambda: mounted.remove(device),
                     path=mountpoint, device=device)
        mounted.append(device)
    monkeypatch.setattr(nbd.mount, 'mount_device', mount_device)


def handler(conf, fake):
    return nbd.NbdHandler(conf.conf, sysfs=fake.sysfs, dev=fake.dev,
                          sleep=fake.sleep, clock=fake.clock)


@pytest.fixture
def image(tmp_path):
    """IMAGE held open as inspection holds it (``/proc/<pid>/fd/<n>``)."""
    sources = []
    for name in ('disk', 'root.raw'):
        path = tmp_path / name
        path.write_bytes(b'\0' * 512)
        sources.append(os.open(path, os.O_RDONLY))
    yield dataclasses.replace(IMAGE, source=_held(sources[0]),
                              backing_sources=(_held(sources[1]),))
    for fd in sources:
        os.close(fd)


def _held(fd):
    return '/proc/%d/fd/%d' % (os.getpid(), fd)


def journal(conf):
    return state.Journal(conf.conf.inject.state_dir, IMAGE.path, 'nbd')


def test_no_driver_says_so_with_the_fix(tmp_path, monkeypatch, conf):
    fake = FakeKernel(str(tmp_path / 'host'), module=False)
    install(fake, monkeypatch)
    with pytest.raises(exception.HandlerUnavailable) as err:
        handler(conf, fake).check_host()
    assert str(err.value) == (
        'no nbd driver: %s/nbd0 missing; load it with modprobe nbd '
        'max_part=16' % fake.dev)


def test_module_without_devices(tmp_path, monkeypatch, conf):
    fake = FakeKernel(str(tmp_path / 'host'), devices=0)
    install(fake, monkeypatch)
    with pytest.raises(exception.HandlerUnavailable) as err:
        handler(conf, fake).check_host()
    assert 'nbds_max=0' in str(err.value)


def test_device_count_comes_from_the_host_in_numeric_order(tmp_path,
                                                           monkeypatch,
                                                           conf):
    fake = FakeKernel(str(tmp_path / 'host'), devices=3)
    fake.add_device(10)
    os.makedirs(fake.block('nbd11'))  # in sysfs but no /dev node: unusable
    install(fake, monkeypatch)
    assert handler(conf, fake).devices() == ['nbd0', 'nbd1', 'nbd2',
                                             'nbd10']


def opts(*layers):
    """The dotted --image-opts of ``(fd, format, backing)`` layers, top
    first; ``backing`` is how a qcow2 layer ends (None: the next one)."""
    text = []
    for depth, (fd, fmt, end) in enumerate(layers):
        pre = 'backing.' * depth
        node = 'backing%d' % depth if depth else 'top'
        ro = 'on' if depth else 'off'
        text += ['%sdriver=%s' % (pre, fmt), '%snode-name=%s' % (pre, node),
                 '%sread-only=%s' % (pre, ro), '%sfile.driver=file' % pre,
                 '%sfile.filename=/proc/self/fd/%d' % (pre, fd),
                 '%sfile.read-only=%s' % (pre, ro)]
        if end is not None:
            text.append('%sbacking=%s' % (pre, end))
    return ','.join(text)


def connect_command(kernel, j, fds, *formats, end=None):
    ends = [None] * (len(fds) - 1) + [end]
    return ('qemu-nbd', '--connect', kernel.dev + '/nbd0', '--description',
            j.work_dir, '--image-opts',
            opts(*zip(fds, formats, ends, strict=True)))


def test_connects_the_chain_by_descriptor_waits_and_disconnects(
        image, kernel, conf):
    h = handler(conf, kernel)
    with journal(conf) as j:
        files = h.mount(image, 0, j)
        [fds] = [kw['pass_fds'] for kw in kernel.kwargs]
        assert kernel.commands == [connect_command(kernel, j, fds, 'qcow2',
                                                   'raw')]
        assert list(kernel.inherited[0].values()) == [
            os.readlink(image.source), os.readlink(image.backing_sources[0])]
        assert kernel.now >= 0.3  # waited for the kernel, not qemu-nbd
        assert kernel.mounted == [kernel.dev + '/nbd0']
        assert [s['kind'] for s in j.steps] == ['tmpdir', 'tmpdir', 'nbd',
                                                'mount']
        assert files.root == j.steps[1]['path'] == os.path.join(
            j.work_dir, 'root')
    assert kernel.commands[-1] == ('qemu-nbd', '--disconnect',
                                   kernel.dev + '/nbd0')
    assert not os.path.exists(kernel.block('nbd0', 'pid'))
    assert kernel.mounted == []
    for fd in fds:  # our copies are closed; qemu-nbd holds its own
        with pytest.raises(OSError):
            os.fstat(fd)


def test_no_path_and_no_header_name_reaches_qemu_nbd(image, kernel, conf):
    """The daemon's /proc/<pid>/fd/<n> and the image paths never appear:
    qemu-nbd opens its own inherited descriptors only."""
    with journal(conf) as j:
        handler(conf, kernel).mount(image, 0, j)
        text = ' '.join(kernel.commands[0])
        for path in (image.source, *image.backing_sources, image.path,
                     *[p for p, _f in image.backing_chain]):
            assert path not in text
        assert '--format' not in text and 'run_as_root' not in \
            kernel.kwargs[0]
    assert kernel.commands[-1][:2] == ('qemu-nbd', '--disconnect')


@pytest.mark.parametrize('name', ['base.qcow2', '7', '../fd/7',
                                  'json:{"driver":"raw"}'])
def test_relative_backing_name_is_never_resolved_by_qemu_nbd(
        tmp_path, kernel, conf, name):
    """Attack: given ``/proc/<pid>/fd/N`` with ``-f qcow2``,
    qemu-nbd resolves the header's relative backing name against
    ``/proc/<pid>/fd/`` (``7`` is the daemon's own descriptor 7), not
    against the directory inspection checked. Now every qcow2 layer's
    backing is stated, down to none at the bottom (``backing=``), so no
    name from a header is ever resolved."""
    layers = []
    for layer in ('top.qcow2', 'mid.qcow2', 'base.qcow2'):
        (tmp_path / layer).write_bytes(b'QFI\xfb' + name.encode())
        layers.append(os.open(tmp_path / layer, os.O_RDONLY))
    try:
        chain = disk_image.ImageInfo(
            str(tmp_path / 'top.qcow2'), 'qcow2', 1 << 20,
            ((str(tmp_path / 'mid.qcow2'), 'qcow2'),
             (str(tmp_path / 'base.qcow2'), 'qcow2')),
            _held(layers[0]), tuple(_held(fd) for fd in layers[1:]))
        with journal(conf) as j:
            handler(conf, kernel).mount(chain, 0, j)
            [fds] = [kw['pass_fds'] for kw in kernel.kwargs]
            assert kernel.commands[0] == connect_command(
                kernel, j, fds, 'qcow2', 'qcow2', 'qcow2', end='')
            assert list(kernel.inherited[0].values()) == [
                str(tmp_path / n) for n in ('top.qcow2', 'mid.qcow2',
                                             'base.qcow2')]
    finally:
        for fd in layers:
            os.close(fd)
    # The only files named are the inherited descriptors.
    arg = kernel.commands[0][-1]
    assert re.findall(r'filename=([^,]*)', arg) == [
        '/proc/self/fd/%d' % fd for fd in fds]
    assert arg.endswith(',backing.backing.backing=')


def test_image_opts_escapes_commas():
    raw = disk_image.ImageInfo('/x', 'raw', 512)
    assert nbd.image_opts(raw, [3]) == opts((3, 'raw', None))
    assert list(nbd._dotted({'file': {'filename': 'a,b'}, 'x': None})) == [
        'file.filename=a,,b', 'x=']


def test_partition_uses_the_kernel_partition_device(image, kernel, conf):
    with journal(conf) as j:
        handler(conf, kernel).mount(image, 2, j)
        assert kernel.mounted == [kernel.dev + '/nbd0p2']


def test_missing_partition_fails_listing_what_appeared(image, kernel, conf):
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            handler(conf, kernel).mount(image, 5, j)
    assert 'partitions: nbd0p1, nbd0p2' in str(err.value)
    assert kernel.commands[-1][:2] == ('qemu-nbd', '--disconnect')


def test_partition_without_max_part_fails_with_the_fix(image, tmp_path,
                                                       monkeypatch, conf):
    fake = FakeKernel(str(tmp_path / 'host'), max_part=0)
    install(fake, monkeypatch)
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            handler(conf, fake).mount(image, 1, j)
    assert 'max_part=0' in str(err.value) and 'max_part=16' in str(err.value)
    assert fake.commands == []


def test_connection_wait_is_bounded_by_timeout_nbd(image, kernel, conf):
    conf.config(timeout_nbd=2)
    kernel.connect_after = 1000
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            handler(conf, kernel).mount(image, 0, j)
    assert 'within 2 s (timeout_nbd)' in str(err.value)
    assert 2 <= kernel.now < 2.2


def test_connected_device_is_skipped(image, kernel, conf):
    kernel.connect('nbd0', 77, 'qemu-nbd --connect /dev/nbd0 other.img')
    with journal(conf) as j:
        handler(conf, kernel).mount(image, 0, j)
        assert kernel.mounted == [kernel.dev + '/nbd1']
    assert os.path.exists(kernel.block('nbd0', 'pid'))  # not ours: kept


def test_stale_device_is_disconnected_then_reused(image, kernel, conf):
    kernel.connect('nbd0', 99, None)  # pid 99 is dead
    with journal(conf) as j:
        handler(conf, kernel).mount(image, 0, j)
        assert kernel.commands[0] == ('qemu-nbd', '--disconnect',
                                      kernel.dev + '/nbd0')
        assert kernel.mounted == [kernel.dev + '/nbd0']


def test_all_busy(image, kernel, conf):
    kernel.connect('nbd0', 77, 'qemu-nbd a')
    kernel.connect('nbd1', 78, 'qemu-nbd b')
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            handler(conf, kernel).mount(image, 0, j)
    assert 'all 2 nbd devices are in use' in str(err.value)
    assert kernel.commands == []


def test_two_mounts_in_one_process_get_different_devices(kernel, conf):
    # Sysfs shows nothing until the fake clock moves: only the claim set
    # keeps the second mount off nbd0.
    kernel.connect_after = 0
    first, second = handler(conf, kernel), handler(conf, kernel)
    with journal(conf) as j1, journal(conf) as j2:
        assert first._claim_device(j1) == 'nbd0'
        assert second._claim_device(j2) == 'nbd1'
    with journal(conf) as j3:  # both released again
        assert first._claim_device(j3) == 'nbd0'


HOLD_LOCK = textwrap.dedent('''
    import sys, time
    from oslo_concurrency import lockutils
    lock = lockutils.external_lock('nbd0', lock_file_prefix='nova-ksm-inject-',
                                   lock_path=sys.argv[1])
    assert lock.acquire(blocking=False)
    print('locked', flush=True)
    time.sleep(60)
''')


def test_device_locked_by_another_process_is_skipped(kernel, conf):
    lock_path = os.path.join(conf.conf.inject.state_dir, 'locks')
    other = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, lock_path],
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout.readline() == b'locked\n'
        with journal(conf) as j:
            assert handler(conf, kernel)._claim_device(j) == 'nbd1'
    finally:
        other.kill()
        other.wait()
    with journal(conf) as j:
        assert handler(conf, kernel)._claim_device(j) == 'nbd0'


def test_failed_connect_still_disconnects_what_it_connected(image, kernel,
                                                            conf,
                                                            monkeypatch):
    def execute(*cmd, **kwargs):
        kernel.commands.append(cmd)
        if cmd[1] == '--connect':
            kernel.connect('nbd0', QEMU_NBD_PID, ' '.join(cmd))
            raise exception.CommandFailed(action='Connecting', cmd='qemu-nbd',
                                          code=1, stderr='late failure')
        kernel.disconnect('nbd0')
        return '', ''
    monkeypatch.setattr(utils, 'execute', execute)
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            handler(conf, kernel).mount(image, 0, j)
    assert 'late failure' in str(err.value)
    assert kernel.commands[-1][:2] == ('qemu-nbd', '--disconnect')
    assert not os.path.exists(kernel.block('nbd0', 'pid'))
