"""How alike two models are: per key cosine and relative L2 distance, aggregated per block.

Streams key by key (two tensors in memory at a time), so SDXL and Flux need no more RAM than a merge.
cos = ⟨a, b⟩ / (‖a‖·‖b‖) on flat fp32 tensors (1 when both are zero, 0 when one is); rel_l2 = ‖a − b‖ / ‖a‖.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_merge.analysis.attention import attention_similarity
from lib_merge.arch.blocks import schema_for
from lib_merge.arch.registry import is_mergeable
from lib_merge.errors import ArchMismatchError
from lib_merge.io.source import SourceModel

Progress = Callable[[int, int], None]
CHUNK = 1 << 22  # elements per float64 step


@dataclass
class KeySimilarity:
    key: str
    slot: str  # block slot, VAE, or "other"
    shape: tuple[int, ...]
    cosine: float
    rel_l2: float
    attention: float | None = None  # attention similarity in % of the attention module this key starts


@dataclass
class BlockSimilarity:
    slot: str
    keys: int
    cosine_mean: float
    cosine_min: float
    cosine_weighted: float  # mean weighted by element count
    attention: float | None = None  # mean attention similarity of the block's attention modules, in %


@dataclass
class Similarity:
    a: str
    b: str
    architecture: str
    keys: list[KeySimilarity] = field(default_factory=list)
    blocks: list[BlockSimilarity] = field(default_factory=list)
    skipped: int = 0  # keys not in both, or of other shapes


def key_similarity(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(cosine, relative L2) of two tensors: float64 sums over chunks, so a large tensor needs no
    float64 copy of itself."""
    x, y = a.reshape(-1), b.reshape(-1)
    dot = sq_a = sq_b = sq_diff = 0.0
    for start in range(0, x.numel(), CHUNK):
        xs, ys = x[start : start + CHUNK].double(), y[start : start + CHUNK].double()
        dot += float(xs @ ys)
        sq_a += float(xs @ xs)
        sq_b += float(ys @ ys)
        sq_diff += float((xs - ys).square().sum())
    na, nb = math.sqrt(sq_a), math.sqrt(sq_b)
    if na == 0 and nb == 0:
        cosine = 1.0
    elif na == 0 or nb == 0:
        cosine = 0.0
    else:
        cosine = dot / (na * nb)
    rel = math.sqrt(sq_diff) / na if na else (0.0 if nb == 0 else float("inf"))
    return cosine, rel


def compare(path_a: str, path_b: str, attention: bool = False, progress: Progress | None = None) -> Similarity:
    """Per key and per block similarity of two models of one architecture (and of their attention modules)."""
    a, b = SourceModel(path_a), SourceModel(path_b)
    try:
        if a.arch.id != b.arch.id:
            raise ArchMismatchError(f"{a.name} is {a.arch.label} but {b.name} is {b.arch.label}")
        schema = schema_for(a.arch.id)
        keys = [k for k in a.keys if is_mergeable(k, a.info(k).dtype)]
        shared = [k for k in keys if k in b and tuple(b.info(k).shape) == tuple(a.info(k).shape)]
        result = Similarity(a.name, b.name, a.arch.id, skipped=len(keys) - len(shared))
        for done, key in enumerate(shared, 1):
            try:
                cosine, rel = key_similarity(a.view(key), b.view(key))
            finally:
                a.release(key)
                b.release(key)
            slot = (schema.slot_of(key) if schema else None) or "other"
            result.keys.append(KeySimilarity(key, slot, tuple(a.info(key).shape), cosine, rel))
            if progress is not None:
                progress(done, len(shared))
        if attention:
            found = attention_similarity(a, b)
            for row in result.keys:
                row.attention = found.get(row.key)
        result.blocks = aggregate(result.keys, list(schema.names_with_vae()) if schema else [])
        return result
    finally:
        a.close()
        b.close()


def aggregate(keys: list[KeySimilarity], order: list[str]) -> list[BlockSimilarity]:
    """Per slot: mean, min and element-weighted mean of the cosines, and the mean attention similarity."""
    by_slot: dict[str, list[KeySimilarity]] = {}
    for k in keys:
        by_slot.setdefault(k.slot, []).append(k)
    slots = [s for s in order if s in by_slot] + sorted(s for s in by_slot if s not in order)
    blocks = []
    for slot in slots:
        members = by_slot[slot]
        sizes = [max(1, math.prod(k.shape)) for k in members]
        cosines = [k.cosine for k in members]
        attention = [k.attention for k in members if k.attention is not None]
        blocks.append(
            BlockSimilarity(
                slot,
                len(members),
                sum(cosines) / len(cosines),
                min(cosines),
                sum(c * n for c, n in zip(cosines, sizes, strict=True)) / sum(sizes),
                sum(attention) / len(attention) if attention else None,
            )
        )
    return blocks
