"""guestmount's pid file; the rest of the handler needs libguestfs."""

from nova_ksm_inject.disk.handlers import guestmount


def test_read_pid_of_a_missing_or_empty_file_is_none(tmp_path):
    path = tmp_path / 'pid'
    assert guestmount.read_pid(str(path)) is None
    path.write_text('')
    assert guestmount.read_pid(str(path)) is None
    path.write_text('12x\n')
    assert guestmount.read_pid(str(path)) is None


def test_read_pid_strips_the_newline(tmp_path):
    path = tmp_path / 'pid'
    path.write_text('123\n')
    assert guestmount.read_pid(str(path)) == 123
