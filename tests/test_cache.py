"""The source-tensor cache: byte budget, LRU order, staleness, no aliasing in merges."""

from __future__ import annotations

import torch
from helpers import load
from test_merge import merge, recipe

from lib_merge.engine.options import EngineOptions
from lib_merge.io.cache import TensorCache

FILE = ("/m/a.safetensors", 100, 1)


def t(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.uint8)


def test_lru_eviction_within_the_budget():
    cache = TensorCache(100)
    for k in "abcd":
        cache.put(FILE, k, t(25))
    assert cache.get(FILE, "a") is not None  # a becomes most recent
    cache.put(FILE, "e", t(25))  # evicts b, the least recent
    assert cache.get(FILE, "b") is None
    assert all(cache.get(FILE, k) is not None for k in "acde")
    s = cache.stats()
    assert (s.entries, s.bytes_used, s.evictions, s.hits, s.misses) == (4, 100, 1, 5, 1)
    assert "4 tensors" in str(s)


def test_large_tensors_and_zero_budget_are_not_cached():
    cache = TensorCache(100)
    cache.put(FILE, "big", t(26))
    assert cache.get(FILE, "big") is None
    off = TensorCache(0)
    off.put(FILE, "x", t(1))
    assert off.stats().entries == 0


def test_a_changed_file_is_never_served():
    cache = TensorCache(1000)
    cache.put(FILE, "k", t(10))
    newer = (FILE[0], 100, 2)
    assert cache.get(newer, "k") is None
    cache.put(newer, "k", t(20))
    assert cache.stats().entries == 1 and cache.stats().bytes_used == 20
    cache.clear()
    assert cache.stats().entries == 0


def test_merges_through_the_cache_hit_and_leave_cached_tensors_untouched(sd1, tmp_path):
    cache = TensorCache(1 << 30)
    engine = EngineOptions(cache=cache)
    text = recipe("add_difference", sd1, alpha=0.7)
    first = load(merge(text, tmp_path / "1.safetensors", engine=engine).path)
    misses = cache.stats().misses
    second = load(merge(text, tmp_path / "2.safetensors", engine=EngineOptions(cache=cache)).path)
    stats = cache.stats()
    assert stats.misses == misses and stats.hits >= 3 * 1100
    plain = load(merge(text, tmp_path / "3.safetensors").path)
    assert all(torch.equal(first[k], second[k]) and torch.equal(first[k], plain[k]) for k in plain)
    from lib_merge.io.source import SourceModel

    a = SourceModel(str(sd1[0]))
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(cache.get(a.cache_identity, key), a.read(key))
