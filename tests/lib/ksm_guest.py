"""One synthetic guest of the KSM benchmark, as a process that looks like
QEMU to the tools that look for QEMU.

The guest maps anonymous memory, asks for merging (``MADV_MERGEABLE``)
and fills it like a booted copy of one image: the first ``identical``
share of its pages holds the same bytes in every guest (and differs from
every other page of the same guest), the rest is unique to the guest. A
small ``volatile`` share of the unique pages is rewritten every
``rewrite_seconds``, like page cache and stacks of a running guest.

The benchmark starts it with ``argv[0] = qemu-system-x86_64`` and QEMU's
own options (``-enable-kvm -name guest=NAME -m MIB``) after the Python
ones, and the guest names its thread ``qemu-system-x86``, so ``pgrep -f
'^qemu-system.*-enable-kvm'`` (ksmtuned), ``ps -C`` and our status
command's ``-name guest=`` parser all see a QEMU guest. Only the standard
library is used: the interpreter may not find the venv under that name.

It prints ``ready`` once its memory is filled and exits when its
standard input closes (the benchmark ended, even if it was killed) or on
SIGTERM.

``--ballast`` makes a plain process holding memory nobody may merge (the
memory pressure scenario); it gives memory back in 256 MiB steps whenever
``MemAvailable`` falls under ``--floor-mib`` (default 4 GiB), so that
others' work on a shared host never runs out.
"""

import argparse
import ctypes
import mmap
import os
import random
import select
import signal
import struct
import sys

PAGE_SIZE = mmap.PAGESIZE
READY = b'ready\n'
QEMU_ARGV0 = 'qemu-system-x86_64'
QEMU_COMM = b'qemu-system-x86'  # the kernel keeps 15 bytes of a name
PR_SET_NAME = 15
PATTERN_PAGES = 256  # random page bodies reused under distinct headers
IMAGE_SEED = 20250101  # "the image": same bytes in every guest
HEADER = struct.Struct('<QQQ')  # page index, owner, rewrite generation
BALLAST_STEP = 256 * 1024 * 1024


def set_comm(name=QEMU_COMM):
    """Name the process like QEMU in /proc/<pid>/comm (best effort)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def pattern():
    """Random page bodies shared by every guest (as one image's pages)."""
    rng = random.Random(IMAGE_SEED)
    return rng.randbytes(PATTERN_PAGES * PAGE_SIZE)


def fill(buf, pages, identical_pages, tag, body=None, first_page=0):
    """Fill pages ``first_page`` to ``pages``: bodies from ``body``,
    distinct headers.

    Headers make every page unique within the guest; owner 0 (identical
    pages) makes page ``i`` the same in every guest. Each page is written
    once, with its final bytes: a page written body first and header later
    would briefly match every page with the same body, and ksmd scanning
    meanwhile would merge (and then lose) pages no guest really shares.
    """
    body = body if body is not None else pattern()
    chunk = bytearray(body)
    per_chunk = len(body) // PAGE_SIZE
    for first in range(0, pages, per_chunk):
        count = min(per_chunk, pages - first)
        # Page i's body is the same whichever page a fill starts at.
        skip = min(count, max(0, first_page - first))
        for j in range(skip, count):
            i = first + j
            HEADER.pack_into(chunk, j * PAGE_SIZE, i + 1,
                             0 if i < identical_pages else tag, 0)
        buf[(first + skip) * PAGE_SIZE:(first + count) * PAGE_SIZE] = (
            memoryview(chunk)[skip * PAGE_SIZE:count * PAGE_SIZE])


def volatile_range(pages, identical_pages, volatile):
    """Page indexes rewritten now and then: the last unique pages."""
    count = min(pages - identical_pages, int(round(pages * volatile)))
    return range(pages - count, pages)


def rewrite(buf, indexes, tag, generation):
    """Give every volatile page new content (a new header)."""
    for i in indexes:
        HEADER.pack_into(buf, i * PAGE_SIZE, i + 1, tag, generation)


def serve(buf, indexes, tag, rewrite_seconds, stdin_fd, floor_mib=None):
    """Rewrite the volatile pages until stdin closes; a ballast gives
    memory back whenever MemAvailable falls under ``floor_mib``."""
    generation, kept = 0, len(buf)
    while True:
        readable, _, _ = select.select([stdin_fd], [], [], rewrite_seconds)
        if readable and not os.read(stdin_fd, 4096):
            return
        generation += 1
        rewrite(buf, indexes, tag, generation)
        if floor_mib is not None:
            kept = give_back(buf, kept, floor_mib)


def mem_available_mib(path='/proc/meminfo'):
    with open(path) as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) // 1024
    return None


def give_back(buf, kept, floor_mib, step=BALLAST_STEP):
    """Free the last ``step`` bytes still held while the host is under
    ``floor_mib`` of available memory (others' work needs it more)."""
    available = mem_available_mib()
    while kept > 0 and available is not None and available < floor_mib:
        start = max(0, kept - step)
        buf.madvise(mmap.MADV_DONTNEED, start, kept - start)
        kept = start
        available += step // (1024 * 1024)
    return kept


def guest_main(args):
    """Body of one guest process."""
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    pages = args.m * 1024 * 1024 // PAGE_SIZE
    identical_pages = 0 if args.ballast else int(pages * args.identical)
    buf = mmap.mmap(-1, pages * PAGE_SIZE,
                    flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if not args.ballast:
        set_comm()
        buf.madvise(mmap.MADV_MERGEABLE)
    if args.fill_pause:
        # Half now, half later: ksmd first visits them in other full
        # scans, and smart_scan later skips them in two cohorts.
        fill(buf, pages // 2, identical_pages, args.tag)
        select.select([], [], [], args.fill_pause)
    fill(buf, pages, identical_pages, args.tag,
         first_page=pages // 2 if args.fill_pause else 0)
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    indexes = volatile_range(pages, identical_pages, args.volatile)
    serve(buf, indexes, args.tag, args.rewrite_seconds,
          sys.stdin.fileno(), args.floor_mib if args.ballast else None)
    return 0


def build_parser():
    """QEMU-looking options first (ksmtuned greps them), then ours."""
    parser = argparse.ArgumentParser(prog=QEMU_ARGV0, add_help=False)
    parser.add_argument('-enable-kvm', action='store_true')
    parser.add_argument('-name', default='guest=bench')
    parser.add_argument('-m', type=int, default=64, help='MiB')
    parser.add_argument('--identical', type=float, default=0.85)
    parser.add_argument('--volatile', type=float, default=0.01)
    parser.add_argument('--rewrite-seconds', type=float, default=2.0)
    parser.add_argument('--tag', type=int, default=1)
    parser.add_argument('--fill-pause', type=float, default=0.0,
                        help='fill half the memory, wait this many '
                             'seconds, then fill the rest')
    parser.add_argument('--ballast', action='store_true',
                        help='memory pressure: not mergeable, not QEMU')
    parser.add_argument('--floor-mib', type=int, default=4096,
                        help='a ballast frees memory while MemAvailable '
                             'is under this')
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return guest_main(args)


if __name__ == '__main__':
    sys.exit(main())
