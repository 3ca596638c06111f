"""Synthetic mergeable guests for the KSM tests (test-only code).

``count`` processes of the benchmark's synthetic guest
(:mod:`tests.lib.ksm_guest`, which the KSM benchmark runs with
``tox -e bench-ksm``), without volatile pages: page ``i`` of the identical
part is the same in every guest and differs from every other page of the
same guest, so once merged exactly ``identical_pages`` KSM pages are
shared and ``(count - 1) * identical_pages`` pages are saved.
"""

import subprocess
import sys

from tests.lib import ksm_guest

PAGE_SIZE = ksm_guest.PAGE_SIZE


class Workload(object):
    """``count`` guest processes of ``mib`` MiB, ``identical`` shared.

    Use as a context manager: the guests are stopped on exit.
    """

    def __init__(self, count=4, mib=64, identical=0.9, first_tag=1,
                 fill_pause=0.0):
        self.count = count
        self.fill_pause = fill_pause
        self.mib = mib
        self.identical = identical
        self.first_tag = first_tag
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
        for tag in range(self.first_tag, self.first_tag + self.count):
            self.procs.append(subprocess.Popen(
                [sys.executable, '-m', ksm_guest.__name__,
                 '-m', str(self.mib), '--identical', str(self.identical),
                 '--volatile', '0', '--tag', str(tag),
                 '--fill-pause', str(self.fill_pause)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for proc in self.procs:
            if proc.stdout.readline() != ksm_guest.READY:
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
