"""Image files opened once, without symlinks, and handed over by fd.

``inst`` stands for ``[inject] image_dirs`` (nova's instances path, owned
by the nova user); ``secret`` for a host file that user must not reach
through the privileged side.
"""

import contextlib
import os
import threading

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import imagefile


@pytest.fixture
def inst(tmp_path):
    (tmp_path / 'inst' / 'uuid').mkdir(parents=True)
    (tmp_path / 'inst' / 'uuid' / 'disk').write_bytes(b'guest disk')
    (tmp_path / 'secret').write_bytes(b'host secret')
    return tmp_path / 'inst'


def open_in(path, inst, holder):
    return imagefile.open_regular(str(path), holder, within=[str(inst)])


def test_source_is_this_process_fd_of_the_file(inst):
    path = str(inst / 'uuid' / 'disk')
    with contextlib.ExitStack() as holder:
        opened = open_in(path, inst, holder)
        assert opened.path == path
        assert opened.source == '/proc/%d/fd/%d' % (os.getpid(), opened.fd)
        assert os.readlink(opened.source) == path
        # Read-only: tools reopen the inode through /proc themselves.
        assert os.read(opened.fd, 5) == b'guest'
        with pytest.raises(OSError):
            os.write(opened.fd, b'x')
    with pytest.raises(OSError):
        os.fstat(opened.fd)  # closed when the holder unwinds


def test_swapping_the_path_after_the_open_changes_nothing(inst, tmp_path):
    path = inst / 'uuid' / 'disk'
    with contextlib.ExitStack() as holder:
        opened = open_in(path, inst, holder)
        # The directory's owner swaps the file for a symlink to a host file.
        os.rename(path, inst / 'uuid' / 'old')
        os.symlink(tmp_path / 'secret', path)
        with open(opened.source, 'rb') as reopened:
            assert reopened.read() == b'guest disk'


@pytest.mark.parametrize('link', ['final', 'directory'])
def test_symlink_below_image_dirs_is_refused(inst, tmp_path, link):
    if link == 'final':
        os.symlink(tmp_path / 'secret', inst / 'uuid' / 'link')
        path = inst / 'uuid' / 'link'
    else:
        os.symlink(tmp_path, inst / 'dirlink')
        path = inst / 'dirlink' / 'secret'
    with contextlib.ExitStack() as holder:
        with pytest.raises(exception.ImageRefused, match='symlink'):
            open_in(path, inst, holder)


def test_symlink_to_a_file_inside_is_refused_too(inst):
    os.symlink('disk', inst / 'uuid' / 'alias')
    with contextlib.ExitStack() as holder:
        with pytest.raises(exception.ImageRefused, match='symlink'):
            open_in(inst / 'uuid' / 'alias', inst, holder)


@pytest.mark.parametrize('name', ['secret', 'inst-other/disk'])
def test_file_outside_image_dirs_is_refused(inst, tmp_path, name):
    (tmp_path / 'inst-other').mkdir()
    (tmp_path / 'inst-other' / 'disk').write_bytes(b'x')
    with contextlib.ExitStack() as holder:
        with pytest.raises(exception.ImageRefused, match='image_dirs'):
            open_in(tmp_path / name, inst, holder)


@pytest.mark.parametrize('tail', ['uuid/../../secret', 'uuid/./disk',
                                  'uuid//disk', 'uuid/disk/'])
def test_unnormalised_path_is_refused(inst, tail):
    with contextlib.ExitStack() as holder:
        with pytest.raises(exception.ImageRefused, match='normalised'):
            imagefile.open_regular('%s/%s' % (inst, tail), holder,
                                   within=[str(inst)])


def test_image_dir_itself_and_non_files_are_not_images(inst):
    with contextlib.ExitStack() as holder:
        with pytest.raises(exception.ImageRefused, match='image_dirs'):
            open_in(inst, inst, holder)
        for name in ('uuid', 'uuid/missing'):
            with pytest.raises(exception.ImageNotFound):
                open_in(inst / name, inst, holder)


def test_fifo_in_place_of_the_image_is_refused_without_blocking(inst):
    fifo = inst / 'uuid' / 'fifo'
    os.mkfifo(fifo)
    refused = []

    def attempt():
        with contextlib.ExitStack() as holder:
            with pytest.raises(exception.ImageNotFound):
                open_in(fifo, inst, holder)
            refused.append(True)
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        # A writer lets the blocked open return, and the thread end.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail('opening a FIFO blocked the privileged side')
    assert refused == [True]


def test_symlinked_image_dir_is_trusted_as_configured(inst, tmp_path):
    os.symlink(inst, tmp_path / 'instances')
    path = tmp_path / 'instances' / 'uuid' / 'disk'
    with contextlib.ExitStack() as holder:
        opened = imagefile.open_regular(str(path), holder,
                                        within=[str(tmp_path / 'instances')])
        assert os.readlink(opened.source) == str(inst / 'uuid' / 'disk')


def test_root_caller_names_its_own_file_through_symlinks(inst, tmp_path):
    os.symlink(inst / 'uuid' / 'disk', tmp_path / 'link')
    with contextlib.ExitStack() as holder:
        opened = imagefile.open_regular(str(tmp_path / 'link'), holder)
        assert opened.path == str(inst / 'uuid' / 'disk')
        assert os.read(opened.fd, 5) == b'guest'


# --- directories the operator configured -------------------------------

def test_operator_dir_through_roots_own_symlink_resolves(tmp_path):
    (tmp_path / 'real').mkdir()
    os.symlink(tmp_path / 'real', tmp_path / 'link')
    os.symlink('link', tmp_path / 'link2')  # relative, two hops
    assert imagefile.resolve_operator_dir(str(tmp_path / 'link2')) == \
        str(tmp_path / 'real')


def test_operator_dir_missing_is_none(tmp_path):
    assert imagefile.resolve_operator_dir(str(tmp_path / 'nope')) is None


@pytest.mark.parametrize('how', ['dir owned by the user',
                                 'dir writable by others',
                                 'link owned by the user'])
def test_symlink_another_user_could_make_is_refused(tmp_path, how):
    """nova owns instances_path: it must not turn _base into a link to /
    (then every host file would be a trusted backing file)."""
    instances = tmp_path / 'instances'
    instances.mkdir()
    os.symlink('/', instances / '_base')
    if how == 'dir owned by the user':
        if os.geteuid() != 0:
            pytest.skip('chown to another user needs root')
        os.chown(instances, 65534, 65534)
    elif how == 'dir writable by others':
        os.chmod(instances, 0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip('lchown to another user needs root')
        os.lchown(instances / '_base', 65534, 65534)
    with pytest.raises(exception.ConfigError, match='passes through symlink'):
        imagefile.resolve_operator_dir(str(instances / '_base'))
