"""A RAM cache of source tensors with a byte budget and LRU eviction.

Repeated merges from the same models (the WebUI's usual loop, XYZ sweeps) then skip the
disk. Entries are keyed by file identity, so a file changed on disk is never served stale.
Cached tensors are read-only by contract: the engine only reads its inputs.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

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
    """Byte-budget LRU. A tensor larger than a quarter of the budget is not cached."""

    def __init__(self, budget_bytes: int):
        self.budget = max(0, int(budget_bytes))
        self._entries: OrderedDict[tuple[FileIdentity, str], torch.Tensor] = OrderedDict()
        self._used = 0
        self._identities: set[FileIdentity] = set()  # files whose stale entries are already dropped
        self.memo: dict[tuple, dict] = {}  # small per-file-pair results (cosine pre-pass ranges)
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, identity: FileIdentity, key: str) -> torch.Tensor | None:
        with self._lock:
            tensor = self._entries.get((identity, key))
            if tensor is None:
                self.misses += 1
                return None
            self._entries.move_to_end((identity, key))
            self.hits += 1
            return tensor

    def put(self, identity: FileIdentity, key: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes > self.budget // 4:
            return
        with self._lock:
            self._drop_stale(identity)
            old = self._entries.pop((identity, key), None)
            if old is not None:
                self._used -= old.numel() * old.element_size()
            while self._entries and self._used + nbytes > self.budget:
                _, evicted = self._entries.popitem(last=False)
                self._used -= evicted.numel() * evicted.element_size()
                self.evictions += 1
            self._entries[(identity, key)] = tensor
            self._used += nbytes

    def _drop_stale(self, identity: FileIdentity) -> None:
        """Entries of the same path with another size or mtime belong to an older file."""
        if identity in self._identities:
            return
        self._identities.add(identity)
        stale = [k for k in self._entries if k[0][0] == identity[0] and k[0] != identity]
        for k in stale:
            t = self._entries.pop(k)
            self._used -= t.numel() * t.element_size()

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
