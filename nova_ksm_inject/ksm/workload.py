"""Synthetic guests for KSM tests and benchmarks.

Each guest is a child process that maps anonymous memory, fills it page by
page, asks for merging (``MADV_MERGEABLE``) and waits. Page ``i`` of the
identical part holds the same bytes in every guest and differs from every
other page of the same guest, so after merging exactly ``identical_pages``
KSM pages are shared and ``(count - 1) * identical_pages`` pages are
saved; the rest of each guest is unique to it.

Run as ``python -m nova_ksm_inject.ksm.workload --mib 64`` for one guest:
it prints ``ready`` once its memory is filled and exits when its standard
input closes or on SIGTERM.
"""

import argparse
import mmap
import os
import signal
import struct
import subprocess
import sys

PAGE_SIZE = mmap.PAGESIZE
READY = b'ready\n'


def fill(buf, pages, identical_pages, tag):
    """Write a distinct header into every page of ``buf``."""
    header = struct.Struct('<QQ')
    for i in range(pages):
        owner = 0 if i < identical_pages else tag
        buf[i * PAGE_SIZE:i * PAGE_SIZE + header.size] = header.pack(
            i + 1, owner)


def guest_main(mib, identical, tag):
    """Body of one guest process."""
    pages = mib * 1024 * 1024 // PAGE_SIZE
    buf = mmap.mmap(-1, pages * PAGE_SIZE,
                    flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_MERGEABLE)
    fill(buf, pages, int(pages * identical), tag)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    sys.stdin.buffer.read()  # until the parent closes our stdin
    return 0


class Workload(object):
    """``count`` guest processes of ``mib`` MiB, ``identical`` shared.

    Use as a context manager: the guests are stopped on exit.
    """

    def __init__(self, count=4, mib=64, identical=0.9):
        self.count = count
        self.mib = mib
        self.identical = identical
        self.procs = []

    @property
    def pages_per_guest(self):
        return self.mib * 1024 * 1024 // PAGE_SIZE

    @property
    def identical_pages(self):
        return int(self.pages_per_guest * self.identical)

    @property
    def expected_sharing(self):
        """pages_sharing once everything identical is merged."""
        return (self.count - 1) * self.identical_pages

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def start(self):
        """Start every guest and wait until each has filled its memory."""
        for tag in range(1, self.count + 1):
            self.procs.append(subprocess.Popen(
                [sys.executable, '-m', __name__, '--mib', str(self.mib),
                 '--identical', str(self.identical), '--tag', str(tag)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for proc in self.procs:
            if proc.stdout.readline() != READY:
                self.stop()
                raise RuntimeError('workload guest %d failed to start'
                                   % proc.pid)
        return self

    def stop(self):
        """Stop every guest and reap it."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)
            proc.stdin.close()
            proc.stdout.close()
        self.procs = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--mib', type=int, default=64)
    parser.add_argument('--identical', type=float, default=0.9)
    parser.add_argument('--tag', type=int, default=1,
                        help='distinguishes the unique pages of guests')
    args = parser.parse_args(argv)
    return guest_main(args.mib, args.identical, args.tag)


if __name__ == '__main__':
    sys.exit(main())
