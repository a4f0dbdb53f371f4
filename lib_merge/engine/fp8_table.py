"""fp8 in, fp8 out by table: a key whose tree is a pure elementwise function of one or two fp8 inputs of
one dtype has at most 256 x 256 distinct results. They are computed once per key in fp32, through the
engine's own evaluation (so every byte equals the element-by-element merge), cast to fp8, and each
element is looked up by its input bytes. That is a few nanoseconds per element where widening both
inputs, merging and casting back takes about four times as long on the CPU (bench/run.py --arch flux).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from lib_merge.engine.plan import Reduced, Step, is_leaf
from lib_merge.io.dtypes import is_fp8
from lib_merge.io.fp8 import fp8_max, widen

_UNSURE = 0x7F  # an fp8 NaN code: marks results a table cannot give (beyond the range, not finite)
MIN_ELEMENTS = 1 << 18  # below this, building the table costs more than it saves
CHUNK = 1 << 18  # elements looked up at a time


def _pure(node: Reduced) -> bool:
    """Every step a function of its inputs' values alone (no per-key draws, no whole-tensor statistics)."""
    if is_leaf(node):
        return True
    spec = node.method
    return spec.elementwise and not spec.needs_key and spec.prepass is None and all(_pure(i) for i in node.inputs)


def table_leaves(tree: Reduced, raw: dict[int, torch.Tensor], leaves: list) -> list | None:
    """The leaves to index a table by, or None when this key is not for a table."""
    if not isinstance(tree, Step) or not 1 <= len(leaves) <= 2 or not _pure(tree):
        return None
    dtypes = {raw[id(leaf)].dtype for leaf in leaves}
    dtype = dtypes.pop()
    if dtypes or not is_fp8(dtype) or raw[id(leaves[0])].numel() < MIN_ELEMENTS:
        return None
    return leaves


@functools.cache
def _grid(dtype: torch.dtype, count: int) -> tuple[torch.Tensor, ...]:
    """Every combination of `count` fp8 codes, as fp16 values (first input's code in the high byte); made
    once per dtype, and only read (the evaluation copies its leaves, as methods write into their inputs)."""
    codes = torch.arange(256**count, dtype=torch.int32)
    parts = [codes] if count == 1 else [codes >> 8, codes & 0xFF]
    return tuple(widen(p.to(torch.uint8).view(dtype)) for p in parts)


def _codes(results: torch.Tensor, dtype: torch.dtype, clamp: bool) -> np.ndarray:
    top = fp8_max(dtype)
    sure = torch.isfinite(results) & ((results.abs() <= top) | clamp)
    cast = results.clamp(-top, top).to(dtype).view(torch.uint8)
    return torch.where(sure, cast, torch.full_like(cast, _UNSURE)).numpy()


def by_table(
    tree: Reduced,
    raw: dict[int, torch.Tensor],
    leaves: list,
    out_dtype: torch.dtype,
    clamp: bool,
    evaluate: Callable[[dict[int, torch.Tensor]], torch.Tensor],
) -> torch.Tensor | None:
    """The key's fp8 result by table lookup; None when some element's result is beyond the range or
    not finite (the caller then merges element by element, which refuses or clamps it by name)."""
    grid = _grid(raw[id(leaves[0])].dtype, len(leaves))
    table = _codes(evaluate({id(leaf): g for leaf, g in zip(leaves, grid)}).to("cpu", torch.float32), out_dtype, clamp)
    first = raw[id(leaves[0])].contiguous().view(torch.uint8).numpy().reshape(-1)
    second = raw[id(leaves[1])].contiguous().view(torch.uint8).numpy().reshape(-1) if len(leaves) > 1 else None
    looked = np.empty(first.shape, dtype=np.uint8)
    index = np.empty(min(CHUNK, first.size), dtype=np.int32)  # int32 and mode='clip': a third faster
    magnitude = np.empty(index.size, dtype=np.uint8)
    for start in range(0, first.size, CHUNK):  # chunks whose index stays in the cache: twice as fast
        end = min(first.size, start + CHUNK)
        part, out = index[: end - start], looked[start:end]
        np.copyto(part, first[start:end])
        if second is not None:
            part <<= 8
            part |= second[start:end]
        np.take(table, part, out=out, mode="clip")  # every index is in the table: clipping changes none
        bits = np.bitwise_and(out, 0x7F, out=magnitude[: end - start])
        if bits.max() == _UNSURE:
            return None
    return torch.from_numpy(looked).view(out_dtype).view(raw[id(leaves[0])].shape)
