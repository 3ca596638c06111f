"""The loop handler and the chain on real raw images (root).

Images are built with mkfs.ext4 -d / sfdisk / parted / qemu-img and read
back with debugfs; nothing here mounts an image except the code under test.
"""

import json
import os
import subprocess

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import inject
from tests.functional.conftest import Debugfs
from tests.functional.conftest import SHADOW

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFunctionalTestKey test@ci'
PASSWORD = 'correct horse battery staple'


def full_request():
    return inject.InjectionRequest(
        key=KEY, net='auto eth0\niface eth0 inet dhcp\n',
        metadata={'role': 'lab', 'seat': '7'}, admin_password=PASSWORD,
        files=[('/etc/motd', b'hello from the test\n'),
               ('/opt/lab/deep/config.ini', b'[lab]\nx = 1\n')])


def openssl_sha512(password, salt):
    return subprocess.run(['openssl', 'passwd', '-6', '-salt', salt,
                           password], capture_output=True, text=True,
                          check=True).stdout.strip()


def assert_full_injection(reader):
    keys = reader.cat('/root/.ssh/authorized_keys')
    assert keys.count(KEY) == 1
    assert reader.stat('/root/.ssh') == (0o40700, 0, 0)
    assert reader.stat('/root/.ssh/authorized_keys') == (0o100600, 0, 0)
    assert 'iface eth0 inet dhcp' in reader.cat('/etc/network/interfaces')
    assert json.loads(reader.cat('/meta.js')) == {'role': 'lab', 'seat': '7'}
    assert reader.cat('/etc/motd') == 'hello from the test\n'
    assert reader.cat('/opt/lab/deep/config.ini') == '[lab]\nx = 1\n'
    shadow = reader.cat('/etc/shadow').splitlines()
    root = shadow[0].split(':')
    assert root[1].startswith('$6$')
    salt = root[1].split('$')[2]
    assert root[1] == openssl_sha512(PASSWORD, salt)  # independent check
    assert root[2:] == SHADOW.splitlines()[0].split(':')[2:]
    assert shadow[1] == SHADOW.splitlines()[1]  # other users untouched
    assert reader.stat('/etc/shadow') == (0o100640, 0, 0)


def test_whole_disk_raw(images, no_leaks):
    image = images.raw_fs()
    result = api.inject_data(image, full_request(), partition=0,
                             handler_names=['loop'], use_cow=False)
    assert result.handler == 'loop'
    assert_full_injection(Debugfs(image))


def test_mbr_partition_two(images, no_leaks):
    image, offset = images.raw_mbr()
    api.inject_data(image, full_request(), partition=2,
                    handler_names=['loop'], use_cow=False)
    assert_full_injection(Debugfs(image, offset))


def test_gpt_partition_one(images, no_leaks):
    image, offset = images.raw_gpt()
    api.inject_data(image, full_request(), partition=1,
                    handler_names=['loop'], use_cow=False)
    assert_full_injection(Debugfs(image, offset))


def test_missing_partition_names_the_ones_present(images, no_leaks):
    image, _offset = images.raw_mbr()
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(image, full_request(), partition=5,
                        handler_names=['loop'], use_cow=False)
    assert 'partition 5 not found' in str(err.value)
    assert 'partitions: 1, 2' in str(err.value)


def test_key_injected_twice_is_kept_once(images, no_leaks):
    image = images.raw_fs()
    request = inject.InjectionRequest(key=KEY)
    for _ in range(2):
        api.inject_data(image, request, partition=0, handler_names=['loop'],
                        use_cow=False)
    assert Debugfs(image).cat('/root/.ssh/authorized_keys').count(KEY) == 1


def test_loop_skipped_for_cow_and_qcow2(images, no_leaks):
    base = images.raw_fs()
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(base, full_request(), partition=0,
                        handler_names=['loop'], use_cow=True)
    assert 'loop: cannot do copy-on-write' in str(err.value)
    overlay = images.qcow2_overlay(base)
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(overlay, full_request(), partition=0,
                        handler_names=['loop'], use_cow=False,
                        fmt='qcow2', trusted_dirs=[images.base])
    assert 'loop: cannot do copy-on-write (the image is qcow2)' in str(
        err.value)


def test_nbd_falls_through_for_real(images, no_leaks):
    """This host has no nbd driver: nbd must fail and loop take over."""
    image = images.raw_fs()
    result = api.inject_data(image, inject.InjectionRequest(key=KEY),
                             partition=0, handler_names=['nbd', 'loop'],
                             use_cow=False)
    assert result.handler == 'loop'
    nbd = result.attempts[0]
    assert nbd.handler == 'nbd' and nbd.outcome in ('unavailable', 'failed')
    assert 'nbd' in nbd.reason and 'modprobe nbd' in nbd.reason


def test_not_a_filesystem_is_a_clear_failure(images, no_leaks):
    image = images.path('empty.raw')
    subprocess.run(['truncate', '-s', '8M', image], check=True)
    with pytest.raises(exception.NoHandlerMounted) as err:
        api.inject_data(image, full_request(), partition=0,
                        handler_names=['loop'], use_cow=False)
    assert 'no filesystem recognised' in str(err.value)
    assert os.path.getsize(image) == 8 * 1024 * 1024
