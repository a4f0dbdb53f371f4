"""Reads past the page cache (O_DIRECT) of one open file, for inputs larger than the RAM that are read once.

Why: the kernel then neither copies the bytes out of its cache (on two cores that copy cost as much CPU
as a many-model merge's arithmetic) nor evicts other pages to hold them. O_DIRECT wants the offset, the
length and the buffer on the device's block size; a page covers every device. Small tensors lie in runs
between the large ones, and each request costs a round trip to the disk: a run of them is read in one
request and the next small tensors come from it (SD1: 13,600 requests of 90 KB took 3.7 s of 21 s). That
window is 1 MiB per open file, the only memory of a many-model merge that grows with the count.
"""

from __future__ import annotations

import mmap
import os
import threading

import torch

DIRECT_ALIGN = 4096
SMALL_BYTES = 256 << 10  # tensors under this are read with the small ones after them
RUN_BYTES = 1 << 20  # at most this much of a run per request


def aligned_down(offset: int) -> int:
    return offset // DIRECT_ALIGN * DIRECT_ALIGN


def aligned_up(offset: int) -> int:
    return -(-offset // DIRECT_ALIGN) * DIRECT_ALIGN


def aligned_bytes(nbytes: int) -> torch.Tensor:
    """A byte buffer in a mapping of its own: page-aligned whatever its size, as O_DIRECT wants it."""
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.uint8)


class DirectReader:
    """A second descriptor of an open file, with O_DIRECT (not opened by its path: the file may have been replaced
    since), or none where the system has no O_DIRECT or the file system refuses it."""

    def __init__(self, fd: int, spans: list[tuple[int, int]]):
        self._fd = fd
        self._direct: int | None = None  # opened on first use; -1 where there is none
        self.refused = False
        self._runs = _run_ends(spans)  # start offset of a small tensor: the end of its run
        self._window_lock = threading.Lock()
        self._window: tuple[int, torch.Tensor] | None = None  # (file offset, bytes) of the last run read
        self._window_buffer: torch.Tensor | None = None

    def available(self) -> bool:
        if self._direct is None:
            fd, flag = -1, getattr(os, "O_DIRECT", 0)
            if flag and self._fd >= 0:
                try:
                    fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | flag)
                except OSError:
                    pass
            if self._direct is None:  # another thread may have opened it meanwhile
                self._direct = fd
            elif fd >= 0:
                os.close(fd)
        return self._direct >= 0 and not self.refused

    def read(self, offset: int, nbytes: int, into: torch.Tensor) -> bool:
        """Bytes [offset, offset + nbytes) of the file into `into` from its aligned start (`into` is page-aligned
        and aligned_up(offset + nbytes) − aligned_down(offset) long); False at the end of the file before them.
        OSError where the file system refuses after all (then `refused` is set: read through the cache)."""
        start = aligned_down(offset)
        if nbytes < SMALL_BYTES and offset in self._runs:
            return self._from_run(offset, nbytes, into)
        return self._read_aligned(start, offset + nbytes - start, into)

    def close(self) -> None:
        if self._direct is not None and self._direct >= 0:
            os.close(self._direct)
        self._direct = None  # (at interpreter exit, os.close may be gone already: closed with the process)

    def _from_run(self, offset: int, nbytes: int, into: torch.Tensor) -> bool:
        start, need = aligned_down(offset), offset + nbytes - aligned_down(offset)
        with self._window_lock:
            window = self._window
            if window is None or not (window[0] <= start and start + need <= window[0] + window[1].numel()):
                end = min(aligned_up(self._runs[offset]), start + RUN_BYTES)
                end = max(end, aligned_up(offset + nbytes))
                if self._window_buffer is None or self._window_buffer.numel() < end - start:
                    self._window_buffer = aligned_bytes(max(end - start, RUN_BYTES))
                got = self._read_some(start, self._window_buffer[: end - start])
                if got < need:
                    return False
                window = self._window = (start, self._window_buffer[:got])
            at = start - window[0]
            into[:need].copy_(window[1][at : at + need])
        return True

    def _read_aligned(self, start: int, need: int, into: torch.Tensor) -> bool:
        return self._read_some(start, into[: aligned_up(need)]) >= need

    def _read_some(self, start: int, into: torch.Tensor) -> int:
        """Reads from `start` until `into` is full or the file ends: the bytes read."""
        view, got = memoryview(into.numpy()), 0
        try:
            while got < len(view):
                n = os.preadv(self._direct, [view[got:]], start + got)
                if n <= 0:
                    break
                got += n
                if n % DIRECT_ALIGN:  # the end of the file
                    break
        except OSError:
            self.refused = True
            raise
        return got


def _run_ends(spans: list[tuple[int, int]]) -> dict[int, int]:
    """For each small tensor's (offset, end), in file order: the end of the run of small tensors it starts."""
    ends: dict[int, int] = {}
    run: list[int] = []
    last_end = 0
    for offset, end in sorted(spans):
        small = end - offset < SMALL_BYTES
        if small and run and offset - last_end < DIRECT_ALIGN:
            run.append(offset)
        else:
            for o in run:
                ends[o] = last_end
            run = [offset] if small else []
        last_end = end
    for o in run:
        ends[o] = last_end
    return ends
