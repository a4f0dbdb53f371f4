"""Early writeback for large files written front to back.

Left alone, the kernel gathers gigabytes of dirty pages and then writes them in bursts that stall
the writer; the final fsync waits for the rest. Measured on this project's machines: 7 GB written
and fsynced in 16-21 s plain, 4.7-5.0 s with this pacing (docs/PERFORMANCE.md). Each call hands the
pages written more than one lag ago to the disk now and drops those already clean from the page
cache, so the cache keeps the inputs being read instead of the output being written.
"""

from __future__ import annotations

import os

LAG = 256 * 2**20  # the newest bytes stay untouched: they may still be in the writer's buffer


class Writeback:
    def __init__(self, fd: int, position: int = 0, lag: int = LAG):
        self.fd = fd
        self.lag = lag
        self.position = position  # bytes written so far
        self.started = position  # everything before this was handed to the disk
        self.enabled = hasattr(os, "posix_fadvise")

    def wrote(self, nbytes: int) -> None:
        self.position += nbytes
        if not self.enabled or self.position - self.started < 2 * self.lag:
            return
        end = self.position - self.lag
        try:
            # On dirty pages DONTNEED starts their writeback; clean ones leave the page cache.
            os.posix_fadvise(self.fd, self.started, end - self.started, os.POSIX_FADV_DONTNEED)
        except OSError:
            self.enabled = False  # a file system without it: plain writes
            return
        self.started = end
