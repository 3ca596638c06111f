"""Functional tests of safe image inspection with the real qemu-img.

Images are built with ``qemu-img create``; where a chain is accepted, it is
checked against qemu's own ``qemu-img info --backing-chain`` (safe here:
the test built every file), so our resolution must match qemu's.
No root needed.
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import time

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import header
from nova_ksm_inject.disk import image
from nova_ksm_inject.disk import qemuimg

MIB = 1024 * 1024
QEMU_IMG = shutil.which('qemu-img')


@pytest.fixture
def dirs(tmp_path):
    """``base`` (trusted), ``inst`` (instances) and ``outside``."""
    paths = {name: tmp_path / name for name in ('base', 'inst', 'outside')}
    for path in paths.values():
        path.mkdir()
    return paths


def create(path, fmt, *opts, size='1M'):
    subprocess.run([QEMU_IMG, 'create', '-q', '-f', fmt, *opts, str(path),
                    size], check=True, capture_output=True)
    return str(path)


def qemu_chain(path):
    """Backing chain as qemu itself resolves it (our images only)."""
    out = subprocess.run(['qemu-img', 'info', '--backing-chain',
                          '--output=json', str(path)], check=True,
                         capture_output=True, text=True).stdout
    return tuple((os.path.realpath(layer['filename']), layer['format'])
                 for layer in json.loads(out)[1:])


def refused(path, **kwargs):
    with pytest.raises(exception.ImageRefused) as err:
        image.inspect_image(str(path), **kwargs)
    return str(err.value)


def strip_backing_format(path):
    """Turn the backing-format header extension into an unknown one.

    qemu >= 5 will not create such images, but older ones did.
    """
    data = bytearray(open(path, 'rb').read())
    at = data.find(b'\xe2\x79\x2a\xca', 0, 65536)
    assert at > 0
    data[at:at + 4] = b'\x0b\xad\xf0\x0d'
    with open(path, 'wb') as out:
        out.write(data)


# --- accepted ------------------------------------------------------------

def test_raw(dirs):
    path = create(dirs['inst'] / 'disk', 'raw', size='3M')
    os.symlink(path, dirs['inst'] / 'link')
    info = image.inspect_image(str(dirs['inst'] / 'link'))
    assert info == image.ImageInfo(path, 'raw', 3 * MIB, ())
    assert image.inspect_image(path, fmt='raw') == info


def test_qcow2(dirs):
    path = create(dirs['inst'] / 'disk', 'qcow2', size='5M')
    info = image.inspect_image(path, fmt='qcow2')
    assert info == image.ImageInfo(path, 'qcow2', 5 * MIB, ())


def test_qcow2_over_raw_in_trusted_dir(dirs):
    base = create(dirs['base'] / 'base.raw', 'raw', size='2M')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-b', '../base/base.raw',
                 '-F', 'raw', size='4M')
    info = image.inspect_image(top, fmt='qcow2',
                               trusted_dirs=[str(dirs['base'])])
    assert info.backing_chain == ((base, 'raw'),) == qemu_chain(top)
    assert (info.format, info.virtual_size) == ('qcow2', 4 * MIB)


def test_qcow2_over_qcow2_over_raw(dirs):
    base = create(dirs['base'] / 'base.raw', 'raw')
    mid = create(dirs['base'] / 'mid.qcow2', 'qcow2', '-b', 'base.raw',
                 '-F', 'raw')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-b', mid, '-F', 'qcow2')
    info = image.inspect_image(top, fmt='qcow2',
                               trusted_dirs=[str(dirs['base'])])
    assert info.backing_chain == ((mid, 'qcow2'), (base, 'raw'))
    assert info.backing_chain == qemu_chain(top)


def test_relative_name_through_symlink_resolves_like_qemu(dirs):
    # The middle layer is reached through a symlink; qemu resolves its
    # relative backing name against the symlink's directory.
    base = create(dirs['base'] / 'base.raw', 'raw', size='1M')
    (dirs['base'] / 'deep').mkdir()
    create(dirs['base'] / 'deep' / 'base.raw', 'raw', size='2M')
    mid = create(dirs['base'] / 'deep' / 'mid.qcow2', 'qcow2', '-u', '-b',
                 'base.raw', '-F', 'raw')
    os.symlink('deep/mid.qcow2', dirs['base'] / 'link.qcow2')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-u', '-b',
                 str(dirs['base'] / 'link.qcow2'), '-F', 'qcow2')
    info = image.inspect_image(top, fmt='qcow2',
                               trusted_dirs=[str(dirs['base'])])
    assert info.backing_chain == ((mid, 'qcow2'), (base, 'raw'))
    assert info.backing_chain == qemu_chain(top)


# --- refused -------------------------------------------------------------

def test_backing_outside_trusted_dir(dirs):
    base = create(dirs['outside'] / 'base.raw', 'raw')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-b', base, '-F', 'raw')
    message = refused(top, fmt='qcow2', trusted_dirs=[str(dirs['base'])])
    assert base in message and 'outside the trusted' in message


def test_second_layer_escapes(dirs):
    base = create(dirs['outside'] / 'base.raw', 'raw')
    mid = create(dirs['base'] / 'mid.qcow2', 'qcow2', '-b', '../outside/'
                 'base.raw', '-F', 'raw')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-b', mid, '-F', 'qcow2')
    message = refused(top, fmt='qcow2', trusted_dirs=[str(dirs['base'])])
    assert 'resolving to %s' % base in message


def test_symlink_in_trusted_dir_escapes(dirs):
    base = create(dirs['outside'] / 'base.raw', 'raw')
    os.symlink(base, dirs['base'] / 'base.raw')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-b',
                 str(dirs['base'] / 'base.raw'), '-F', 'raw')
    refused(top, fmt='qcow2', trusted_dirs=[str(dirs['base'])])


def test_external_data_file(dirs):
    top = create(dirs['inst'] / 'disk', 'qcow2', '-o',
                 'data_file=%s' % (dirs['outside'] / 'data'))
    assert 'external data file' in refused(top)


def test_raw_lookalike_pointing_at_etc_passwd(dirs):
    # A "raw" disk whose first bytes are a qcow2 header naming a host file.
    path = create(dirs['inst'] / 'disk.raw', 'qcow2', '-u', '-b',
                  '/etc/passwd', '-F', 'raw')
    assert header.format_of(header.read(path=path)) == 'qcow2'
    assert 'stated raw' in refused(path, fmt='raw')
    # Without a stated format, our own header read refuses it before any
    # qemu tool opens the file; stated qcow2, the chain check does.
    message = refused(path, trusted_dirs=[str(dirs['base'])])
    assert 'state --format qcow2' in message
    assert '/etc/passwd' in refused(path, fmt='qcow2',
                                    trusted_dirs=[str(dirs['base'])])


def test_backing_without_format_even_if_trusted(dirs):
    base = create(dirs['base'] / 'base.raw', 'raw')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-b', base, '-F', 'raw')
    strip_backing_format(top)
    message = refused(top, fmt='qcow2', trusted_dirs=[str(dirs['base'])])
    assert 'qemu-img rebase -u -F raw|qcow2' in message


def test_recorded_raw_backing_that_is_qcow2(dirs):
    base = create(dirs['base'] / 'base.img', 'qcow2')
    top = create(dirs['inst'] / 'disk', 'qcow2', '-u', '-b', base,
                 '-F', 'raw')
    message = refused(top, fmt='qcow2', trusted_dirs=[str(dirs['base'])])
    assert 'recorded as raw but its header is qcow2' in message


@pytest.mark.parametrize('subformat', ['monolithicSparse',
                                       'monolithicFlat'])
def test_vmdk(dirs, subformat):
    path = create(dirs['inst'] / 'disk.vmdk', 'vmdk', '-o',
                  'subformat=%s' % subformat)
    assert header.format_of(header.read(path=path)) == 'vmdk'
    assert 'vmdk image, which is not accepted' in refused(path)
    assert 'stated raw' in refused(path, fmt='raw')


def test_missing_image(dirs):
    with pytest.raises(exception.ImageNotFound):
        image.inspect_image(str(dirs['inst'] / 'nothing'))


# --- qemu-img itself -------------------------------------------------------

def test_image_in_use_by_qemu_is_refused(dirs, no_leaks):
    path = create(dirs['inst'] / 'disk', 'qcow2')
    sock = dirs['inst'] / 'nbd.sock'
    daemon = subprocess.Popen(
        ['qemu-storage-daemon',
         '--blockdev', 'driver=file,filename=%s,node-name=f' % path,
         '--blockdev', 'driver=qcow2,file=f,node-name=q',
         '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
         '--export', 'type=nbd,id=e,node-name=q,writable=on'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), 'qemu-storage-daemon did not start'
        assert 'in use by another process' in refused(path)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert image.inspect_image(path).format == 'qcow2'


@pytest.fixture
def fake_qemu_img(monkeypatch):
    """Run a shell script in qemu-img's place, in its sandbox, with its
    arguments (the sandbox sees /usr only, so no script file)."""
    def install(body):
        monkeypatch.setattr(qemuimg, 'QEMU_IMG',
                            ('sh', '-c', body, 'qemu-img'))
    return install


@pytest.fixture
def qemu_img_stderr(monkeypatch):
    """What each (sandboxed) qemu-img run wrote to stderr."""
    seen = []
    real = utils.execute

    def spy(*cmd, **kwargs):
        out, err = real(*cmd, **kwargs)
        seen.append(err)
        return out, err
    monkeypatch.setattr(utils, 'execute', spy)
    return seen


def test_limits_reach_qemu_img(dirs, conf, fake_qemu_img, qemu_img_stderr):
    conf.config(group='inject', qemu_img_cpu_time=7,
                qemu_img_address_space=300 * MIB)
    fake_qemu_img('cat /proc/self/limits >&2\nexec qemu-img "$@"\n')
    path = create(dirs['inst'] / 'disk', 'raw')
    assert image.inspect_image(path).format == 'raw'
    [lines] = [err.splitlines() for err in qemu_img_stderr]
    assert any(line.split()[-3:] == ['7', '7', 'seconds'] and
               line.startswith('Max cpu time') for line in lines)
    assert any(line.startswith('Max address space') and
               line.split()[-3:-1] == [str(300 * MIB)] * 2 for line in lines)


@pytest.mark.parametrize('owner', ['nobody', 'root'])
def test_qemu_img_never_runs_as_root(dirs, conf, fake_qemu_img,
                                     qemu_img_stderr, owner):
    """As root: the file's owner, or [inject] helper_user for root's own
    file; as anyone else: the caller. It opens only the descriptor."""
    conf.config(group='inject', helper_user='nobody')
    nobody = pwd.getpwnam('nobody')
    fake_qemu_img('id -u >&2; test -e "%s" && echo SEES-HOST >&2; '
                  'exec qemu-img "$@"\n' % dirs['inst'])
    path = create(dirs['inst'] / 'disk', 'raw')
    if owner == 'nobody':
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    assert image.inspect_image(path).format == 'raw'
    expected = nobody.pw_uid if os.geteuid() == 0 else os.geteuid()
    assert qemu_img_stderr[0].split() == [str(expected)]


def test_runaway_qemu_img_is_killed_and_refused(dirs, conf, fake_qemu_img):
    conf.config(group='inject', qemu_img_cpu_time=1)
    fake_qemu_img('while :; do :; done\n')
    path = create(dirs['inst'] / 'disk', 'raw')
    started = time.monotonic()
    message = refused(path)
    assert 'killed by signal' in message
    assert 'qemu_img_cpu_time=1' in message
    assert time.monotonic() - started < 10


def test_qemu_img_missing(dirs, monkeypatch, tmp_path):
    path = create(dirs['inst'] / 'disk', 'raw')
    (tmp_path / 'empty').mkdir()
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    with pytest.raises(exception.ToolMissing, match='qemu-utils'):
        image.inspect_image(path)
