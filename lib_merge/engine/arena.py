"""Many-model keys read whole, past the page cache, into one buffer that the merge reuses for every key.

Why whole: TIES, model stock and geometric median pass over a key's inputs two or three times; read once
into memory, the passes cost no more reads. Why past the page cache (O_DIRECT): 16 SD1 models are larger
than the RAM, so the cache only turns over, and its copies cost as much CPU as the merge's arithmetic on
two cores. Why one buffer: fresh pages cost a fault and a clearing each, as much system time as those
reads save, so its pages are made once. Why shared by the workers: SD1's largest key over 16 models needs
0.9 GB, and a buffer that size for each would pass the 2 GB a merge may hold. A reader thread fills
regions in plan order while the workers compute the keys before (engine/run.py), so the disk and the
cores work at once; it waits while the regions taken leave no room.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from lib_merge.engine.plan import KeyJob
from lib_merge.io.direct_read import DIRECT_ALIGN, aligned_bytes

ARENA_BYTES = 1 << 30  # the inputs of SD1's largest key over 16 models (0.94 GB)


@dataclass
class WholeRead:
    """A key's inputs in a region of the arena, and the fp32 memory lent for its result."""

    region: torch.Tensor
    raw: dict[int, torch.Tensor]  # by id() of the leaf, as the engine's raw inputs
    result: torch.Tensor | None


class Arena:
    def __init__(self, size: int = ARENA_BYTES) -> None:
        self.size = size
        self._buffer: torch.Tensor | None = None  # mapped at the first region, its pages kept to the end
        self._taken: dict[int, int] = {}  # start: end
        self._changed = threading.Condition()

    def read(self, job: KeyJob, check: Callable[[], None], io: Executor | None = None) -> WholeRead:
        """The key's inputs read past the page cache into a region (give it back with `give_back`); `io`: threads
        that read the files side by side, so that the disk's round trips for small tensors overlap."""
        leaves = job.leaves()
        sizes = [leaf.direct_bytes(job.key) for leaf in leaves]
        result_bytes = 4 * math.prod(job.out.shape)
        if sum(sizes) + result_bytes > self.size:  # the inputs alone fit: the result in memory of its own
            result_bytes = 0
        region = self._take(sum(sizes) + result_bytes, check)
        try:
            check()
            starts = [0, *itertools.accumulate(sizes)][:-1]
            reads = [
                functools.partial(leaf.read_direct, job.key, region[at : at + size])
                for leaf, at, size in zip(leaves, starts, sizes, strict=True)
            ]
            tensors = list(io.map(lambda read: read(), reads)) if io is not None else [read() for read in reads]
            raw = {id(leaf): t for leaf, t in zip(leaves, tensors, strict=True)}
            at = sum(sizes)
            result = region[at : at + result_bytes].view(torch.float32) if result_bytes else None
            return WholeRead(region, raw, result)
        except BaseException:
            self.give_back(region)
            raise

    def give_back(self, region: torch.Tensor) -> None:
        with self._changed:
            self._taken.pop(region.data_ptr() - self._buffer.data_ptr(), None)
            self._changed.notify_all()

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor`'s memory lies in the buffer (a result must not, once its region is given back)."""
        if self._buffer is None or tensor.device.type != "cpu":
            return False
        base, address = self._buffer.data_ptr(), tensor.untyped_storage().data_ptr()
        return base <= address < base + self.size

    def _take(self, nbytes: int, check: Callable[[], None]) -> torch.Tensor:
        """`nbytes` of the buffer, page-aligned; waits while the regions taken leave no room, calling `check`
        (a cancel) as it waits."""
        nbytes = -(-nbytes // DIRECT_ALIGN) * DIRECT_ALIGN
        if nbytes > self.size:
            raise ValueError(f"a region of {nbytes} bytes does not fit an arena of {self.size}")
        with self._changed:
            while (start := self._first_fit(nbytes)) is None:
                check()
                self._changed.wait(0.5)
            self._taken[start] = start + nbytes
            if self._buffer is None:
                self._buffer = aligned_bytes(self.size)
            return self._buffer[start : start + nbytes]

    def _first_fit(self, nbytes: int) -> int | None:
        start = 0
        for begin, end in sorted(self._taken.items()):
            if begin - start >= nbytes:
                return start
            start = max(start, end)
        return start if self.size - start >= nbytes else None
