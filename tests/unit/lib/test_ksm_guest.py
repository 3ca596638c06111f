"""The synthetic guest's memory: what KSM can merge and what it cannot."""

from tests.lib import ksm_guest

PAGE = ksm_guest.PAGE_SIZE


def pages_of(buf, count):
    return [bytes(buf[i * PAGE:(i + 1) * PAGE]) for i in range(count)]


def guest(tag, pages=20, identical=15, body=None):
    buf = bytearray(pages * PAGE)
    ksm_guest.fill(buf, pages, identical, tag, body)
    return pages_of(buf, pages)


def test_identical_pages_match_across_guests_unique_ones_do_not():
    body = ksm_guest.pattern()
    one, two = guest(1, body=body), guest(2, body=body)
    assert one[:15] == two[:15]
    assert all(a != b for a, b in zip(one[15:], two[15:], strict=True))


def test_pages_of_one_guest_are_all_different():
    pages = guest(1, pages=ksm_guest.PATTERN_PAGES + 10)
    assert len(set(pages)) == len(pages)


def test_pages_are_full_of_data_not_zeros():
    page = guest(1)[3]
    assert page.count(0) < PAGE // 10


def test_volatile_pages_are_the_last_unique_ones():
    assert list(ksm_guest.volatile_range(100, 85, 0.02)) == [98, 99]
    # Never into the identical part, whatever the share.
    assert list(ksm_guest.volatile_range(100, 97, 0.05)) == [97, 98, 99]
    assert list(ksm_guest.volatile_range(100, 85, 0)) == []


def test_rewrite_changes_only_the_volatile_pages():
    buf = bytearray(20 * PAGE)
    ksm_guest.fill(buf, 20, 15, 3)
    before = pages_of(buf, 20)
    ksm_guest.rewrite(buf, range(18, 20), 3, generation=1)
    after = pages_of(buf, 20)
    assert after[:18] == before[:18]
    assert after[18] != before[18] and after[19] != before[19]


def test_a_fill_in_two_halves_writes_the_same_pages_as_one():
    """``--fill-pause``: the first half, then the rest from its page on,
    gives the pages one fill gives (the second fill leaves the first
    half alone)."""
    body = ksm_guest.pattern()[:8 * PAGE]  # chunks of 8 pages
    buf = bytearray(20 * PAGE)
    ksm_guest.fill(buf, 10, 15, 3, body)
    assert pages_of(buf, 20)[10:] == [bytes(PAGE)] * 10
    ksm_guest.fill(buf, 20, 15, 3, body, first_page=10)
    assert pages_of(buf, 20) == guest(3, body=body)


def test_parser_takes_qemu_options_first():
    args = ksm_guest.build_parser().parse_args([
        '-enable-kvm', '-name', 'guest=bench-w1-g1', '-m', '256',
        '--identical', '0.85', '--tag', '7'])
    assert args.enable_kvm and args.m == 256 and args.tag == 7
    assert not args.ballast


class _WriteLog(bytearray):
    """A guest's memory that records every write (slices only)."""

    def __init__(self, size):
        super().__init__(size)
        self.writes = []

    def __setitem__(self, key, value):
        self.writes.append((key, bytes(value)))
        super().__setitem__(key, value)


def test_each_page_is_written_once_with_its_final_bytes():
    # ksmd may scan while a guest fills: a page must never hold bytes
    # (a bare body) that other pages share but the guest will not keep.
    pages = ksm_guest.PATTERN_PAGES + 10
    buf = _WriteLog(pages * PAGE)
    ksm_guest.fill(buf, pages, 15, 3)
    final = bytes(buf)
    written = [0] * pages
    for key, value in buf.writes:
        assert key.start % PAGE == 0 and len(value) % PAGE == 0
        assert final[key.start:key.start + len(value)] == value
        for i in range(key.start // PAGE, (key.start + len(value)) // PAGE):
            written[i] += 1
    assert written == [1] * pages
