"""Unit tests of safe image inspection: header detection and chain walking.

qemu-img is replaced by a fake that answers canned ``qemu-img info`` JSON;
the image files are tiny headers written in ``tmp_path``.
"""

import contextlib
import dataclasses
import json
import logging
import os
import re
import struct

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.disk import image
from nova_ksm_inject.disk import qemuimg
from nova_ksm_inject.disk import sandbox
from tests.unit import fake_privsep

QCOW2 = b'QFI\xfb' + struct.pack('>I', 3)
RAW = b'\0' * 512


def write(path, header=RAW):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b'\0' * 64)
    return str(path)


class FakeQemuImg:
    """Stands in for ``utils.execute``; answers ``qemu-img info``.

    ``calls`` holds the command run inside the sandbox (what follows
    bwrap's ``--``), ``paths`` the files its descriptors name.
    """

    def __init__(self):
        self.calls = []
        self.paths = []
        self.layers = {}
        self.failure = None

    def add(self, path, fmt, backing=None, backing_fmt=None, **specific):
        data = {'format': fmt, 'virtual-size': 1 << 20,
                'filename': path}
        if backing is not None:
            data['backing-filename'] = backing
        if backing_fmt is not None:
            data['backing-filename-format'] = backing_fmt
        if specific:
            data['format-specific'] = {'type': fmt, 'data': specific}
        self.layers[os.path.realpath(path)] = data

    def __call__(self, *cmd, **kwargs):
        cmd = cmd[cmd.index(sandbox.BWRAP):]  # after setpriv, for root
        cmd = cmd[cmd.index('--') + 1:]
        self.calls.append((cmd, kwargs))
        # The sandbox's /proc/self/fd/N is ours, with the same number.
        fd = int(re.fullmatch(r'/proc/self/fd/([0-9]+)', cmd[-1]).group(1))
        assert fd in kwargs['pass_fds']
        target = os.readlink('/proc/self/fd/%d' % fd)
        self.paths.append(target)
        if self.failure:
            raise self.failure
        return json.dumps(self.layers[target]), ''


@pytest.fixture
def qemu_img(monkeypatch):
    fake = FakeQemuImg()
    monkeypatch.setattr(utils, 'execute', fake)
    return fake


@pytest.fixture
def trusted(tmp_path):
    path = tmp_path / 'base'
    path.mkdir()
    return path


def refusal(fake_call_count, qemu_img, *args, **kwargs):
    with pytest.raises(exception.ImageRefused) as err:
        image.inspect_image(*args, **kwargs)
    assert len(qemu_img.calls) == fake_call_count
    return str(err.value)


@pytest.mark.parametrize('name', ['missing', 'dir', 'dangling'])
def test_not_a_regular_file(tmp_path, qemu_img, name):
    (tmp_path / 'dir').mkdir()
    os.symlink('nowhere', tmp_path / 'dangling')
    with pytest.raises(exception.ImageNotFound):
        image.inspect_image(str(tmp_path / name))
    assert qemu_img.calls == []


# --- stated and detected formats ----------------------------------------

def test_raw_image(tmp_path, qemu_img, conf):
    conf.config(group='inject', qemu_img_cpu_time=7)
    conf.config(group='inject', qemu_img_address_space=128 * 1024 * 1024)
    path = write(tmp_path / 'disk.img')
    qemu_img.add(path, 'raw')
    info = image.inspect_image(path)
    assert info == image.ImageInfo(path, 'raw', 1 << 20, ())
    [(cmd, kwargs)] = qemu_img.calls
    assert cmd[:-1] == ('qemu-img', 'info', '--output=json', '-f', 'raw')
    assert qemu_img.paths == [path]
    limits = kwargs['preexec_fn'].limits
    assert isinstance(limits, utils.ResourceLimits)
    assert (limits.cpu_time, limits.address_space) == (7, 128 << 20)


def test_info_is_frozen(tmp_path, qemu_img):
    path = write(tmp_path / 'disk.qcow2', QCOW2)
    qemu_img.add(path, 'qcow2')
    info = image.inspect_image(path, fmt='qcow2')
    assert info.format == 'qcow2'
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.format = 'raw'


def test_path_is_real_path(tmp_path, qemu_img):
    real = write(tmp_path / 'disk.img')
    os.symlink('disk.img', tmp_path / 'link')
    qemu_img.add(real, 'raw')
    assert image.inspect_image(str(tmp_path / 'link')).path == real
    assert qemu_img.paths == [real]


def test_stated_raw_but_qcow2_header_is_refused(tmp_path, qemu_img):
    path = write(tmp_path / 'disk.img', QCOW2)
    message = refusal(0, qemu_img, path, fmt='raw')
    assert 'stated raw' in message and 'qcow2' in message
    assert 'CVE-2024-32498' in message


def test_stated_qcow2_but_raw_is_refused(tmp_path, qemu_img):
    path = write(tmp_path / 'disk.img')
    assert 'stated qcow2' in refusal(0, qemu_img, path, fmt='qcow2')


@pytest.mark.parametrize('fmt', ['vmdk', 'qed', 'bogus'])
def test_stated_other_format_is_refused(tmp_path, qemu_img, fmt):
    path = write(tmp_path / 'disk.img')
    assert 'only raw, qcow2' in refusal(0, qemu_img, path, fmt=fmt)


@pytest.mark.parametrize('header', [b'KDMV', b'# Disk DescriptorFile\n',
                                    b'QFI\xfb\0\0\0\1', b'LUKS\xba\xbe'])
def test_detected_other_format_is_refused(tmp_path, qemu_img, header):
    path = write(tmp_path / 'disk.img', header)
    assert 'not accepted' in refusal(0, qemu_img, path)
    assert 'stated raw' in refusal(0, qemu_img, path, fmt='raw')


# --- qcow2 header fields that name other files ------------------------

def backed_qcow2(incompatible=0):
    """A v3 qcow2 header whose backing file fields are set."""
    return (b'QFI\xfb' + struct.pack('>IQI', 3, 512, 12)).ljust(72, b'\0') \
        + struct.pack('>Q', incompatible)


def test_header_backing_file_needs_the_format_stated(tmp_path, qemu_img):
    # A raw disk's owner can write a qcow2 header naming a backing file
    # into its first sector: detected, it would pull that file in.
    path = write(tmp_path / 'disk', backed_qcow2())
    message = refusal(0, qemu_img, path)
    assert 'state --format qcow2' in message
    assert 'CVE-2024-32498' in message
    assert 'stated raw' in refusal(0, qemu_img, path, fmt='raw')
    qemu_img.add(path, 'qcow2')
    assert image.inspect_image(path, fmt='qcow2').format == 'qcow2'
    assert qemu_img.calls[0][0][4] == 'qcow2'
    assert qemu_img.paths == [path]


@pytest.mark.parametrize('fmt', [None, 'qcow2'])
def test_external_data_file_bit_is_refused_before_qemu_img(tmp_path,
                                                           qemu_img, fmt):
    head = (QCOW2 + b'\0' * 64)[:72] + struct.pack('>Q', 1 << 2)
    path = write(tmp_path / 'disk', head)
    qemu_img.add(path, 'qcow2')
    message = refusal(0, qemu_img, path, fmt=fmt)
    assert 'external data file' in message and 'qemu-img convert' in message


def test_truncated_qcow2_header_is_refused(tmp_path, qemu_img):
    path = tmp_path / 'disk'
    path.write_bytes(QCOW2)
    assert 'truncated' in refusal(0, qemu_img, str(path))


# --- backing chains --------------------------------------------------

def test_qcow2_over_raw_in_trusted_dir(tmp_path, qemu_img, trusted):
    base = write(trusted / 'base.raw')
    top = write(tmp_path / 'inst' / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base, 'raw')
    qemu_img.add(base, 'raw')
    info = image.inspect_image(top, trusted_dirs=[str(trusted)])
    assert info.backing_chain == ((base, 'raw'),)
    assert [cmd[4] for cmd, _kw in qemu_img.calls] == ['qcow2', 'raw']
    assert all(isinstance(kw['preexec_fn'].limits, utils.ResourceLimits)
               for _cmd, kw in qemu_img.calls)
    assert not any('--backing-chain' in cmd or '-U' in cmd
                   for cmd, _kw in qemu_img.calls)


def test_default_trusted_dirs_come_from_conf(tmp_path, qemu_img, trusted,
                                             conf):
    base = write(trusted / 'base.raw')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base, 'raw')
    qemu_img.add(base, 'raw')
    assert 'outside the trusted' in refusal(1, qemu_img, top)
    conf.config(group='inject', trusted_backing_dirs=[str(trusted)])
    assert image.inspect_image(top).backing_chain == ((base, 'raw'),)


def test_backing_outside_trusted_dir_is_refused(tmp_path, qemu_img,
                                                trusted):
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', '/etc/passwd', 'raw')
    message = refusal(1, qemu_img, top, trusted_dirs=[str(trusted)])
    assert '/etc/passwd' in message and 'trusted_backing_dirs' in message


def test_no_trusted_dirs_refuses_every_backing_file(tmp_path, qemu_img):
    base = write(tmp_path / 'base.raw')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base, 'raw')
    assert 'none' in refusal(1, qemu_img, top, trusted_dirs=[])


def test_relative_backing_resolves_against_image_dir(tmp_path, qemu_img,
                                                     trusted, monkeypatch):
    write(trusted / 'base.raw')
    top = write(tmp_path / 'inst' / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', 'base.raw', 'raw')
    # Resolving against the working directory would wrongly find it.
    monkeypatch.chdir(trusted)
    refusal(1, qemu_img, top, trusted_dirs=[str(trusted)])

    qemu_img.add(top, 'qcow2', '../base/base.raw', 'raw')
    qemu_img.add(str(trusted / 'base.raw'), 'raw')
    info = image.inspect_image(top, trusted_dirs=[str(trusted)])
    assert info.backing_chain == ((str(trusted / 'base.raw'), 'raw'),)


def test_relative_backing_resolves_against_name_not_real_path(
        tmp_path, qemu_img, trusted):
    # qemu opens layer 1 by the name layer 0 gave (a symlink), so layer
    # 1's relative backing name is relative to the symlink's directory.
    mid = write(trusted / 'deep' / 'mid.qcow2', QCOW2)
    os.symlink('deep/mid.qcow2', trusted / 'link.qcow2')
    base = write(trusted / 'base.raw')
    write(trusted / 'deep' / 'base.raw')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', str(trusted / 'link.qcow2'), 'qcow2')
    qemu_img.add(mid, 'qcow2', 'base.raw', 'raw')
    qemu_img.add(base, 'raw')
    info = image.inspect_image(top, trusted_dirs=[str(trusted)])
    assert info.backing_chain == ((mid, 'qcow2'), (base, 'raw'))


def test_symlink_escaping_trusted_dir_is_refused(tmp_path, qemu_img,
                                                 trusted):
    secret = write(tmp_path / 'outside' / 'secret')
    os.symlink(secret, trusted / 'base.raw')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', str(trusted / 'base.raw'), 'raw')
    message = refusal(1, qemu_img, top, trusted_dirs=[str(trusted)])
    assert 'resolving to %s' % secret in message


def test_dotdot_through_symlink_is_resolved_like_open(tmp_path, qemu_img,
                                                      trusted):
    # trusted/link/../x is outside/x for the kernel, not trusted/x.
    write(trusted / 'x')
    write(tmp_path / 'outside' / 'x')
    (tmp_path / 'outside' / 'sub').mkdir()
    os.symlink(tmp_path / 'outside' / 'sub', trusted / 'link')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', str(trusted) + '/link/../x', 'raw')
    refusal(1, qemu_img, top, trusted_dirs=[str(trusted)])


def test_symlinked_trusted_dir_is_accepted(tmp_path, qemu_img, trusted):
    base = write(trusted / 'base.raw')
    os.symlink(trusted, tmp_path / 'cache')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', str(tmp_path / 'cache' / 'base.raw'), 'raw')
    qemu_img.add(base, 'raw')
    info = image.inspect_image(top, trusted_dirs=[str(tmp_path / 'cache')])
    assert info.backing_chain == ((base, 'raw'),)


def test_sibling_with_trusted_prefix_is_refused(tmp_path, qemu_img,
                                                trusted):
    evil = write(tmp_path / 'base-evil' / 'x.raw')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', evil, 'raw')
    refusal(1, qemu_img, top, trusted_dirs=[str(trusted)])


def test_missing_backing_format_is_refused(tmp_path, qemu_img, trusted):
    base = write(trusted / 'base.raw')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base)
    message = refusal(1, qemu_img, top, trusted_dirs=[str(trusted)])
    assert 'qemu-img rebase -u -F raw|qcow2 -b %s %s' % (base, top) in message


def test_other_backing_format_is_refused(tmp_path, qemu_img, trusted):
    base = write(trusted / 'base.vmdk', b'KDMV')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base, 'vmdk')
    assert 'vmdk backing' in refusal(1, qemu_img, top,
                                     trusted_dirs=[str(trusted)])


@pytest.mark.parametrize('recorded, header', [('raw', QCOW2),
                                              ('qcow2', RAW),
                                              ('raw', b'KDMV')])
def test_backing_format_must_match_header(tmp_path, qemu_img, trusted,
                                          recorded, header):
    base = write(trusted / 'base', header)
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base, recorded)
    message = refusal(1, qemu_img, top, trusted_dirs=[str(trusted)])
    assert 'recorded as %s' % recorded in message


@pytest.mark.parametrize('name', ['json:{"file.filename": "/etc/x"}',
                                  'nbd:localhost:10809', 'ssh:host'])
def test_protocol_backing_is_refused(tmp_path, qemu_img, trusted, name):
    # Even when a file by that name exists where a path would resolve.
    local = trusted / name
    write(local)
    qemu_img.add(str(local), 'raw')
    top = write(trusted / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', name, 'raw')
    message = refusal(1, qemu_img, top, trusted_dirs=['/'])
    assert 'a qemu protocol or json: pseudo-file' in message


def test_missing_backing_file_is_refused(tmp_path, qemu_img, trusted):
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', str(trusted / 'gone.raw'), 'raw')
    assert 'does not exist' in refusal(1, qemu_img, top,
                                       trusted_dirs=[str(trusted)])


@pytest.mark.parametrize('depth', [0, 1])
def test_data_file_is_refused_at_any_depth(tmp_path, qemu_img, trusted,
                                           depth):
    mid = write(trusted / 'mid.qcow2', QCOW2)
    top = write(tmp_path / 'disk', QCOW2)
    if depth == 0:
        qemu_img.add(top, 'qcow2', **{'data-file': '/etc/shadow'})
    else:
        qemu_img.add(top, 'qcow2', mid, 'qcow2')
        qemu_img.add(mid, 'qcow2', **{'data-file': '/etc/shadow'})
    message = refusal(depth + 1, qemu_img, top, trusted_dirs=[str(trusted)])
    assert 'external data file /etc/shadow' in message


def test_loop_is_refused(tmp_path, qemu_img, trusted):
    a = write(trusted / 'a.qcow2', QCOW2)
    b = write(trusted / 'b.qcow2', QCOW2)
    qemu_img.add(a, 'qcow2', 'b.qcow2', 'qcow2')
    qemu_img.add(b, 'qcow2', 'a.qcow2', 'qcow2')
    assert 'loops' in refusal(2, qemu_img, a, trusted_dirs=[str(trusted)])


def _chain(trusted, length, qemu_img):
    names = ['l%d.qcow2' % i for i in range(length + 1)]
    for i, name in enumerate(names):
        path = write(trusted / name, QCOW2)
        if i < length:
            qemu_img.add(path, 'qcow2', names[i + 1], 'qcow2')
        else:
            qemu_img.add(path, 'qcow2')
    return str(trusted / names[0])


def test_chain_at_limit_is_accepted(qemu_img, trusted, conf):
    conf.config(group='inject', max_backing_chain=3)
    top = _chain(trusted, 3, qemu_img)
    info = image.inspect_image(top, trusted_dirs=[str(trusted)])
    assert len(info.backing_chain) == 3
    assert len(qemu_img.calls) == 4


def test_chain_too_long_is_refused(qemu_img, trusted, conf):
    conf.config(group='inject', max_backing_chain=3)
    top = _chain(trusted, 4, qemu_img)
    message = refusal(4, qemu_img, top, trusted_dirs=[str(trusted)])
    assert 'max_backing_chain=3' in message


# --- qemu-img failures --------------------------------------------------

def _failed(code, stderr):
    return exception.CommandFailed(action='x', cmd='qemu-img', code=code,
                                   stderr=stderr)


@pytest.mark.parametrize('code, stderr, expected', [
    (-24, '', 'killed by signal 24'),
    (-9, '', 'qemu_img_cpu_time'),
    (1, 'Failed to get shared "write" lock', 'in use by another process'),
    (1, 'Is another process using the image [/x]?', 'stop the guest'),
    (1, 'Image is not in qcow2 format', 'failed (exit 1: Image is not'),
])
def test_qemu_img_failure_is_refused(tmp_path, qemu_img, code, stderr,
                                     expected):
    path = write(tmp_path / 'disk', QCOW2)
    qemu_img.failure = _failed(code, stderr)
    assert expected in refusal(1, qemu_img, path)


def test_qemu_img_missing(tmp_path, qemu_img, monkeypatch):
    path = write(tmp_path / 'disk')
    qemu_img.failure = _failed(1, 'failed to execute qemu-img')
    monkeypatch.setattr(qemuimg.shutil, 'which', lambda name: None)
    with pytest.raises(exception.ToolMissing, match='qemu-utils'):
        image.inspect_image(path)


@pytest.mark.parametrize('answer', [
    'not json', '[]', '{"format": "raw"}',
    '{"format": "qcow2", "virtual-size": 1}',
    '{"format": "raw", "virtual-size": -1}'])
def test_bad_qemu_img_answer_is_refused(tmp_path, qemu_img, monkeypatch,
                                        answer):
    path = write(tmp_path / 'disk')
    monkeypatch.setattr(utils, 'execute', lambda *c, **k: (answer, ''))
    with pytest.raises(exception.ImageRefused):
        image.inspect_image(path)


def test_summary_logged(tmp_path, qemu_img, caplog):
    path = write(tmp_path / 'disk')
    qemu_img.add(path, 'raw')
    with caplog.at_level(logging.DEBUG, logger='nova_ksm_inject'):
        image.inspect_image(path)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith('qemu-img info --output=json -f raw %s took'
                            % path) for m in messages)
    assert ('Inspected image %s: format raw, virtual size 1048576 bytes, '
            'backing chain of 0 file(s)' % path) in messages


# --- held open: what the privileged side does -------------------------

def test_held_image_and_layers_are_handed_to_tools_by_descriptor(
        tmp_path, qemu_img, trusted):
    base = write(trusted / 'base.raw')
    top = write(tmp_path / 'inst' / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base, 'raw')
    qemu_img.add(base, 'raw')
    with contextlib.ExitStack() as holder:
        info = image.inspect_image(top, trusted_dirs=[str(trusted)],
                                   holder=holder,
                                   within=[str(tmp_path / 'inst')])
        [(layer_source, layer_format)] = info.layer_paths()
        assert re.fullmatch(r'/proc/%d/fd/[0-9]+' % os.getpid(),
                            info.source)
        assert info.tool_path == info.source
        assert (os.readlink(info.source), os.readlink(layer_source)) == (
            top, base)
        assert layer_format == 'raw'
        assert qemu_img.paths == [top, base]
        fds = [int(src.rsplit('/', 1)[1]) for src in (info.source,
                                                       layer_source)]
    assert (info.path, info.backing_chain) == (top, ((base, 'raw'),))
    for fd in fds:  # closed with the holder
        with pytest.raises(OSError):
            os.fstat(fd)


def test_held_image_outside_image_dirs_is_refused(tmp_path, qemu_img):
    path = write(tmp_path / 'elsewhere' / 'disk')
    qemu_img.add(path, 'raw')
    with contextlib.ExitStack() as holder:
        message = refusal(0, qemu_img, path, holder=holder,
                          within=[str(tmp_path / 'inst')])
    assert 'image_dirs' in message


def test_unheld_image_is_inspected_by_path(tmp_path, qemu_img):
    path = write(tmp_path / 'disk')
    qemu_img.add(path, 'raw')
    info = image.inspect_image(path)
    assert (info.source, info.backing_sources) == (None, ())
    assert info.tool_path == path and qemu_img.paths == [path]


def test_info_crosses_privsep_as_plain_data(tmp_path, qemu_img, trusted):
    base = write(trusted / 'base.raw')
    top = write(tmp_path / 'disk', QCOW2)
    qemu_img.add(top, 'qcow2', base, 'raw')
    qemu_img.add(base, 'raw')
    with contextlib.ExitStack() as holder:
        info = image.inspect_image(top, trusted_dirs=[str(trusted)],
                                   holder=holder)
    back = image.ImageInfo.from_dict(fake_privsep.over_the_wire(
        info.to_dict()))
    # Descriptors are the privileged side's own: they do not cross.
    assert back == image.ImageInfo(top, 'qcow2', 1 << 20, ((base, 'raw'),))
