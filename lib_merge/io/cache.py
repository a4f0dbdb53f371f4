"""A RAM cache of source tensors with a byte budget and LRU eviction.

Repeated merges from the same models (the WebUI's usual loop, XYZ sweeps) then skip the
disk. Entries are keyed by file identity, so a file changed on disk is never served stale.
Cached tensors are read-only by contract: the engine only reads its inputs.
"""

from __future__ import annotations

import gc
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from lib_merge.io.dtypes import FP8_DTYPES
from lib_merge.io.fp8 import fp8_peak

FileIdentity = tuple[str, int, int]  # realpath, size, mtime_ns


@dataclass
class CacheStats:
    entries: int
    bytes_used: int
    budget: int
    hits: int
    misses: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __str__(self) -> str:
        return (
            f"cache: {self.entries} tensors, {self.bytes_used / 2**20:,.0f} / {self.budget / 2**20:,.0f} MB, "
            f"{self.hits} hits, {self.misses} misses ({self.hit_rate:.0%}), {self.evictions} evictions"
        )


class TensorCache:
    """Byte-budget LRU. A tensor larger than a quarter of the budget is not cached.

    Part of the budget can be reserved for memory held elsewhere for the same purpose (the
    loaded model's backups, which serve as model A): the entries then fit in what is left.
    """

    def __init__(self, budget_bytes: int):
        self.budget = max(0, int(budget_bytes))
        # (tensor, its largest |value|) by (file, key), least recently used first
        self._entries: OrderedDict[tuple[FileIdentity, str], tuple[torch.Tensor, float]] = OrderedDict()
        self._used = 0
        self.reserved = 0
        self._identities: set[FileIdentity] = set()  # files whose stale entries are already dropped
        # Pre-pass results per method and file pair: the cosine range and each key's similarity
        # (one value per column: a few MB for SDXL), kept with the cache and cleared with it.
        self.memo: dict[tuple, tuple[dict, dict]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, identity: FileIdentity, key: str) -> torch.Tensor | None:
        with self._lock:
            entry = self._entries.get((identity, key))
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end((identity, key))
            self.hits += 1
            return entry[0]

    def put(self, identity: FileIdentity, key: str, tensor: torch.Tensor) -> None:
        nbytes = _nbytes(tensor)
        if nbytes > self.budget // 4 or nbytes + self.reserved > self.budget:
            return
        peak = peak_magnitude(tensor)
        with self._lock:
            self._drop_stale(identity)
            old = self._entries.pop((identity, key), None)
            if old is not None:
                self._used -= _nbytes(old[0])
            self._evict_to(self.budget - self.reserved - nbytes)
            self._entries[(identity, key)] = (tensor, peak)
            self._used += nbytes

    def contains(self, identity: FileIdentity, key: str) -> bool:
        """Whether the tensor is cached (not counted as a hit or a miss)."""
        with self._lock:
            return (identity, key) in self._entries

    def peak(self, identity: FileIdentity, key: str) -> float:
        """The largest |value| of a cached tensor (NaN when it holds one); inf when not cached."""
        with self._lock:
            entry = self._entries.get((identity, key))
            return entry[1] if entry is not None else math.inf

    def reserve(self, nbytes: int) -> None:
        """Keep `nbytes` of the budget for memory held outside the cache, evicting what no longer fits."""
        with self._lock:
            self.reserved = max(0, int(nbytes))
            self._evict_to(self.budget - self.reserved)

    def _evict_to(self, limit: int) -> None:
        while self._entries and self._used > limit:
            _, (evicted, _) = self._entries.popitem(last=False)
            self._used -= _nbytes(evicted)
            self.evictions += 1

    def _drop_stale(self, identity: FileIdentity) -> None:
        """Entries of the same path with another size or mtime belong to an older file."""
        if identity in self._identities:
            return
        self._identities.add(identity)
        stale = [k for k in self._entries if k[0][0] == identity[0] and k[0] != identity]
        for k in stale:
            self._used -= _nbytes(self._entries.pop(k)[0])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._identities.clear()
            self.memo.clear()
            self._used = 0
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._used, self.budget, self.hits, self.misses, self.evictions)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def peak_magnitude(tensor: torch.Tensor) -> float:
    """max |x| in one read-only pass: NaN if any element is NaN, inf if any is infinite."""
    if tensor.numel() == 0:
        return 0.0
    if not tensor.is_floating_point():
        return math.inf  # never taken as a bound
    if tensor.dtype in FP8_DTYPES:  # no aminmax kernel for fp8
        return fp8_peak(tensor)
    low, high = torch.aminmax(tensor)
    low, high = float(low), float(high)
    return math.nan if math.isnan(low) or math.isnan(high) else max(-low, high)


def read_through(cache: TensorCache | None, source, key: str) -> torch.Tensor:
    """`source.read(key)`, served from and kept in `cache` when there is one."""
    if cache is None:
        return source.read(key)
    tensor = cache.get(source.cache_identity, key)
    if tensor is None:
        tensor = source.read(key)
        cache.put(source.cache_identity, key, tensor)
    return tensor
