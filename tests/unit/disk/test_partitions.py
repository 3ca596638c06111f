"""The partition table as partx prints it, read in user space."""

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject.disk import partitions


def test_table_is_number_to_byte_offset_and_size():
    out = ('   1    2048  204800\n'
           '   2  206848 1050624\n'
           '  15     34     2014\n')
    assert partitions.table(out) == {1: (2048 * 512, 204800 * 512),
                                     2: (206848 * 512, 1050624 * 512),
                                     15: (34 * 512, 2014 * 512)}


def test_table_skips_what_is_not_three_numbers():
    out = ('NR START SECTORS\n'
           '\n'
           '   1 2048\n'
           '   2 2048 x\n'
           '   3 2048 10 extra\n'
           '   4 4096 10\n')
    assert partitions.table(out) == {4: (4096 * 512, 10 * 512)}


def test_no_partitions_is_an_empty_table():
    assert partitions.table('') == {}


def test_extent_of_a_missing_partition_names_those_there_are():
    with pytest.raises(exception.HandlerFailed,
                       match=r'partition 3 not found in disk.img '
                             r'\(partitions: 1, 2\)'):
        partitions.extent({1: (0, 1), 2: (1, 1)}, 3, 'disk.img')
    with pytest.raises(exception.HandlerFailed, match='partitions: none'):
        partitions.extent({}, 1, 'disk.img')


def test_extent():
    assert partitions.extent({2: (4096, 512)}, 2, 'disk.img') == (4096, 512)
