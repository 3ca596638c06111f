"""The guestfs handler on a fake libguestfs binding and a fake guestmount.

An appliance launch costs 11-15 s here, so the launch bound, the mount
choices and the guestmount command line are checked with stand-ins; the
real appliance is exercised in tests/functional/disk/test_guestfs.py.
"""

import dataclasses
import os
import subprocess
import sys
import threading
import types

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import guestfs_files
from nova_ksm_inject.disk import image as disk_image
from nova_ksm_inject.disk import state
from nova_ksm_inject.disk.handlers import guestfs
from tests.unit.disk.fake_guestfs import FakeGuestFS

IMAGE = disk_image.ImageInfo('/inst/disk', 'qcow2', 2 ** 30,
                             (('/base/root.raw', 'raw'),))


@pytest.fixture
def binding(monkeypatch):
    """Install a fake ``guestfs`` module; ``handles`` collects handles."""
    module = types.SimpleNamespace(handles=[], make=FakeGuestFS)

    def GuestFS(python_return_dict=False):
        assert python_return_dict  # hashes must come back as dicts
        handle = module.make()
        module.handles.append(handle)
        return handle
    module.GuestFS = GuestFS
    monkeypatch.setattr(guestfs, 'load_binding', lambda: module)
    return module


def journal(conf):
    return state.Journal(conf.conf.inject.state_dir, IMAGE.path, 'guestfs')


def test_interface_choice(monkeypatch, conf, binding):
    handler = guestfs.GuestfsHandler(conf.conf)
    assert handler.interface() == 'binding'
    conf.config(group='guestfs', interface='guestmount')
    monkeypatch.setattr(guestfs.shutil, 'which', lambda n: '/usr/bin/' + n)
    assert handler.interface() == 'guestmount'
    monkeypatch.setattr(guestfs, 'load_binding', lambda: None)
    conf.config(group='guestfs', interface='auto')
    assert handler.interface() == 'guestmount'
    conf.config(group='guestfs', interface='binding')
    with pytest.raises(exception.HandlerUnavailable, match='python3-guestfs'):
        handler.check_host()
    conf.config(group='guestfs', interface='auto')
    monkeypatch.setattr(guestfs.shutil, 'which', lambda n: None)
    with pytest.raises(exception.HandlerUnavailable, match='not installed'):
        handler.check_host()


def test_binding_explicit_format_backend_partition(conf, binding):
    conf.config(group='guestfs', backend='direct',
                backend_settings=['force_tcg'])
    with journal(conf) as j:
        files = guestfs.GuestfsHandler(conf.conf).mount(IMAGE, 2, j)
        assert isinstance(files, guestfs_files.GuestfsFiles)
        g = binding.handles[0]
        assert g.mounted == [('/dev/sda2', '/')]
        assert not g.closed
    calls = [c for c in g.calls if c[0] not in ('list_partitions', 'mount')]
    assert calls == [('set_backend', 'direct'),
                     ('set_backend_settings', ['force_tcg']),
                     ('add_drive_opts', '/inst/disk'), ('launch',),
                     ('shutdown',), ('close',)]
    assert g.closed


def test_add_drive_gets_format_and_read_write(conf, binding, monkeypatch):
    seen = {}
    monkeypatch.setattr(FakeGuestFS, 'add_drive_opts',
                        lambda self, path, **kw: seen.update(kw))
    with journal(conf) as j:
        guestfs.GuestfsHandler(conf.conf).mount(IMAGE, 0, j)
    assert seen == {'format': 'qcow2', 'readonly': False}
    assert binding.handles[0].mounted == [('/dev/sda', '/')]


def test_empty_backend_settings_leave_the_environment_alone(conf, binding):
    with journal(conf) as j:
        guestfs.GuestfsHandler(conf.conf).mount(IMAGE, 0, j)
    assert 'set_backend_settings' not in [c[0] for c in
                                          binding.handles[0].calls]


def test_missing_partition_lists_present_ones_and_closes(conf, binding):
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            guestfs.GuestfsHandler(conf.conf).mount(IMAGE, 5, j)
    assert 'partition 5 not found in /inst/disk (partitions: 1, 2)' in str(
        err.value)
    assert binding.handles[0].closed


def test_inspect_mounts_parents_first(conf, binding):
    binding.make = lambda: FakeGuestFS(
        partitions=['/dev/sda1', '/dev/sda2', '/dev/sda3'],
        roots=['/dev/sda2'],
        mountpoints={'/boot/efi': '/dev/sda3', '/': '/dev/sda2',
                     '/boot': '/dev/sda1'})
    with journal(conf) as j:
        guestfs.GuestfsHandler(conf.conf).mount(IMAGE, -1, j)
    assert binding.handles[0].mounted == [
        ('/dev/sda2', '/'), ('/dev/sda1', '/boot'), ('/dev/sda3', '/boot/efi')]


@pytest.mark.parametrize('roots, words', [
    ([], 'no operating system'),
    (['/dev/sda1', '/dev/sda2'], 'several operating systems')])
def test_inspect_needs_exactly_one_root(conf, binding, roots, words):
    binding.make = lambda: FakeGuestFS(roots=roots)
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed, match=words):
            guestfs.GuestfsHandler(conf.conf).mount(IMAGE, -1, j)


def test_launch_failure_is_a_handler_failure(conf, binding):
    def fail():
        raise RuntimeError('guestfs_launch failed.\nThis usually means...')
    binding.make = lambda: FakeGuestFS(launch=fail)
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            guestfs.GuestfsHandler(conf.conf).mount(IMAGE, 0, j)
    assert 'failed to launch: guestfs_launch failed.;' in str(err.value)
    g = binding.handles[0]
    assert g.closed and 'shutdown' not in [c[0] for c in g.calls]


def bounded_conf(conf, seconds):
    # launch_timeout has min=5; the bound itself is what is tested here.
    return types.SimpleNamespace(
        guestfs=types.SimpleNamespace(
            launch_timeout=seconds, backend='direct', backend_settings=[],
            debug=False, interface='binding'),
        inject=conf.conf.inject)


def test_launch_that_hangs_is_killed_after_the_timeout(conf, binding,
                                                       monkeypatch):
    appliance_killed = threading.Event()
    binding.make = lambda: FakeGuestFS(
        launch=lambda: appliance_killed.wait(5) and (_ for _ in ()).throw(
            RuntimeError('appliance closed the connection')))
    monkeypatch.setattr(guestfs, 'kill_appliances',
                        lambda parent, path: appliance_killed.set() or [1])
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed) as err:
            guestfs.GuestfsHandler(bounded_conf(conf, 0.2)).mount(IMAGE, 0, j)
    assert 'did not come up within 0.2 s' in str(err.value)
    assert appliance_killed.is_set() and binding.handles[0].closed


def test_launch_that_outlives_the_kill_is_closed_by_its_thread(
        conf, binding, monkeypatch):
    release = threading.Event()
    binding.make = lambda: FakeGuestFS(launch=lambda: release.wait(5))
    monkeypatch.setattr(guestfs, 'kill_appliances', lambda parent, path: [])
    monkeypatch.setattr(guestfs, 'KILL_GRACE', 0.1)
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed):
            guestfs.GuestfsHandler(bounded_conf(conf, 0.1)).mount(IMAGE, 0, j)
    g = binding.handles[0]
    assert not g.closed  # never closed under a running launch()
    release.set()
    for _ in range(100):
        if g.closed:
            break
        threading.Event().wait(0.02)
    assert g.closed


def test_kill_appliances_kills_only_matching_qemu_children(tmp_path):
    fake_qemu = tmp_path / 'qemu-system-x86_64'
    fake_qemu.symlink_to(sys.executable)
    sleeper = ['-c', 'import time; time.sleep(30)']
    target = subprocess.Popen([str(fake_qemu), *sleeper, '-drive',
                               'file=/img/a,,b,cache=writeback'])
    other_image = subprocess.Popen([str(fake_qemu), *sleeper, '-drive',
                                    'file=/img/other,format=raw'])
    not_qemu = subprocess.Popen([sys.executable, *sleeper, 'file=/img/a,,b,'])
    try:
        assert guestfs.kill_appliances(os.getpid(), '/img/a,b') == [
            target.pid]
        assert target.wait(5) == -9
        assert other_image.poll() is None and not_qemu.poll() is None
    finally:
        for proc in (target, other_image, not_qemu):
            proc.kill()
            proc.wait()


class FakeGuestmount:
    """Stands in for utils.execute running guestmount."""

    def __init__(self, monkeypatch, error=None):
        self.calls = []
        self.error = error
        self.pid = 31337
        monkeypatch.setattr(utils, 'execute', self)
        monkeypatch.setattr(guestfs, 'load_binding', lambda: None)
        monkeypatch.setattr(guestfs.shutil, 'which', lambda n: '/bin/' + n)

    def __call__(self, *cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        if isinstance(self.error, subprocess.TimeoutExpired):
            kwargs['on_execute'](self)
        if self.error:
            raise self.error
        return '', ''

    def kill(self):
        self.calls.append('kill')

    def wait(self):
        self.calls.append('wait')


@pytest.mark.parametrize('partition, selector', [
    (0, ['-m', '/dev/sda']), (2, ['-m', '/dev/sda2']), (-1, ['-i'])])
def test_guestmount_command_line(conf, monkeypatch, partition, selector):
    conf.config(group='guestfs', backend_settings=['force_tcg', 'x=y'])
    fake = FakeGuestmount(monkeypatch)
    with journal(conf) as j:
        files = guestfs.GuestfsHandler(conf.conf).mount(IMAGE, partition, j)
        mountpoint = files.root
        # The injection's work dir, then the mountpoint and, beside it
        # (rmtree must never walk into the guest), the pid file's dir.
        assert [s['kind'] for s in j.steps] == ['tmpdir'] * 3
        assert [s['path'] for s in j.steps] == [
            j.work_dir, os.path.join(j.work_dir, 'root'),
            os.path.join(j.work_dir, 'guestmount')]
        pidfile_dir = j.steps[2]['path']
        assert mountpoint == j.steps[1]['path']
    assert j.work_dir.startswith(conf.conf.inject.state_dir + '/work/')
    cmd, kwargs = fake.calls[0]
    assert cmd == ('guestmount', '--format=qcow2', '-a', '/inst/disk',
                   *selector, '--rw', '--pid-file',
                   os.path.join(pidfile_dir, 'guestmount.pid'), mountpoint)
    assert kwargs['env_variables']['LIBGUESTFS_BACKEND'] == 'direct'
    assert kwargs['env_variables']['LIBGUESTFS_BACKEND_SETTINGS'] == \
        'force_tcg:x=y'
    assert kwargs['timeout'] == conf.conf.guestfs.launch_timeout
    assert 'run_as_root' not in kwargs  # we run as root already
    assert not os.path.exists(mountpoint)


def test_guestmount_and_binding_open_the_held_descriptor(conf, binding,
                                                         monkeypatch):
    # Tools get /proc/<pid>/fd/<n> of the inspected file, never its path,
    # which its directory's owner could swap for a symlink meanwhile.
    held = dataclasses.replace(IMAGE, source='/proc/1/fd/7',
                               backing_sources=('/proc/1/fd/8',))
    with journal(conf) as j:
        guestfs.GuestfsHandler(conf.conf).mount(held, 0, j)
    assert ('add_drive_opts', '/proc/1/fd/7') in binding.handles[0].calls
    fake = FakeGuestmount(monkeypatch)
    with journal(conf) as j:
        guestfs.GuestfsHandler(conf.conf).mount(held, 0, j)
    cmd, _kwargs = fake.calls[0]
    assert cmd[1:4] == ('--format=qcow2', '-a', '/proc/1/fd/7')


def test_guestmount_failure_is_a_handler_failure(conf, monkeypatch):
    FakeGuestmount(monkeypatch, error=exception.CommandFailed(
        action='Mounting', cmd='guestmount', code=1,
        stderr='mount: /dev/sda9: No such file or directory'))
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed, match='/dev/sda9'):
            guestfs.GuestfsHandler(conf.conf).mount(IMAGE, 9, j)


def test_guestmount_timeout_kills_it_and_its_appliance(conf, monkeypatch):
    fake = FakeGuestmount(monkeypatch, error=subprocess.TimeoutExpired(
        'guestmount', 120))
    killed = []
    monkeypatch.setattr(guestfs, 'kill_appliances',
                        lambda parent, path: killed.append((parent, path)))
    with journal(conf) as j:
        with pytest.raises(exception.HandlerFailed, match='launch_timeout'):
            guestfs.GuestfsHandler(conf.conf).mount(IMAGE, 0, j)
    assert killed == [(31337, '/inst/disk')]
    assert fake.calls[1:] == ['kill', 'wait']
