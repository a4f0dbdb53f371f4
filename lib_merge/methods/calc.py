"""SuperMerger's calc modes except the cosine pair, as pure per-key functions.

Inputs are fresh fp32 copies on the compute device; each function returns the merged tensor.
None of these is elementwise over chunks: they look at the whole tensor (norms, filters,
slices, or one random draw per key), so the engine gives them whole tensors.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated

import torch

from lib_merge.methods.filters import smooth
from lib_merge.methods.registry import (
    SCALAR,
    Bounds,
    Seed,
    Unit,
    UnitScalar,
    Weight,
    alpha_is_zero,
    merge_method,
)

SELF_SKIP = ("to_out", "proj_out", "norm")  # keys that self/plus random leave as A (SuperMerger)


@merge_method("trainDifference", "calc", passthrough=alpha_is_zero)
def train_difference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: Weight = 0.5) -> torch.Tensor:
    """a + (b − c) · |b − a| / (|b − c| + |b − a|) · 1.8α; keeps A when b equals c everywhere."""
    if torch.equal(b, c):
        return a
    d = b - c
    diff_ba = (b - a).abs_()
    denom = (b - c).abs_().add_(diff_ba)
    w = torch.where(denom == 0, torch.zeros_like(denom), diff_ba / denom)
    return a.add_(d.mul_(w), alpha=alpha * 1.8)


@merge_method(
    "smoothAdd",
    "calc",
    passthrough=alpha_is_zero,
    calc_modes={"smoothAdd": {}, "smoothAddMT": {}},  # the same bytes: the filters run per key anyway
    calc_aliases={"smoothAdd MT": "smoothAddMT"},
)
def smooth_add(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: Weight = 0.5) -> torch.Tensor:
    """a + α · gaussian(median(b − c, size 3), σ 1), scipy.ndimage defaults, over every dimension."""
    d = b.sub_(c).cpu()  # b is this call's own copy
    if d.dim():
        d = smooth(d, overwrite=True)
    return a.add_(d.to(a.device), alpha=alpha)


@merge_method("extract", "calc")
def extract(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    *,
    alpha: Unit = 0.5,
    beta: UnitScalar = 0.0,
    gamma: Annotated[float, Bounds(0.0, 1e6, enforce=True, slider=(0.0, 10.0)), SCALAR] = 0.3,
):
    """a + lerp(b − a, c − a, α) · lerp(d, 1 − d, β), d = ((cos(b − a, c − a) per row + 1)/2)^γ."""
    p, q = b.sub_(a), c.sub_(a)
    if p.dim() == 0:
        p, q = p.reshape(1), q.reshape(1)
    cs = torch.nn.functional.cosine_similarity(p, q, dim=-1, eps=1e-8).clamp_(-1, 1).unsqueeze(-1)
    d = ((cs + 1) / 2) ** gamma
    return a.add_(torch.lerp(p, q, alpha).mul_(torch.lerp(d, 1 - d, beta)).reshape(a.shape))


@merge_method("tensor", "calc", calc_modes={"tensor": {"axis": 0}, "tensor2": {"axis": 1}})
def tensor_swap(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    alpha: Unit = 0.5,
    beta: Unit = 0.25,
    axis: Annotated[int, Bounds(0, 1, enforce=True)] = 0,
) -> torch.Tensor:
    """Exchange slices along axis 0 (tensor) or 1 (tensor2) instead of interpolating; 0-d keeps A."""
    if a.dim() == 0:
        return a
    dim = 1 if int(axis) == 1 and a.dim() > 1 else 0
    n = a.shape[dim]

    def index_at(fraction: float) -> int:  # ⌊N·f⌋, without 10·(0.6 + 0.7 − 1) = 2.9999… landing on 2
        return math.floor(round(n * fraction, 9))

    if alpha + beta <= 1:
        start, end, out, src = index_at(beta), index_at(alpha + beta), a, b
    else:
        start, end, out, src = index_at(alpha + beta - 1), index_at(beta), b, a
    index = [slice(None)] * a.dim()
    index[dim] = slice(start, end)
    out[tuple(index)] = src[tuple(index)]
    return out


def keeps_a_for_self(key: str) -> bool:
    return any(word in key for word in SELF_SKIP)


@merge_method("self", "calc", elementwise=True, passthrough=alpha_is_zero, keeps_key=keeps_a_for_self)
def self_scale(a: torch.Tensor, *, alpha: Weight = 0.5) -> torch.Tensor:
    """a · α (keys with to_out / proj_out / norm, and α = 0, keep A: see the registry)."""
    return a.mul_(alpha)


def key_generator(seed: int, stream: str, key: str) -> torch.Generator:
    """A CPU generator from sha256("seed:stream:key"), the same on every thread and device."""
    digest = hashlib.sha256(f"{int(seed)}:{stream}:{key}".encode()).digest()
    h = int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
    return torch.Generator(device="cpu").manual_seed(h)


@merge_method("plus random", "calc", passthrough=alpha_is_zero, keeps_key=keeps_a_for_self, calc_modes={"random": {}})
def plus_random(a: torch.Tensor, *, alpha: Weight = 0.5, seed: Seed = 0, key: str) -> torch.Tensor:
    """a + α · n, n ~ N(0, 1) drawn for this key from its own seeded generator."""
    noise = torch.randn(a.shape, generator=key_generator(int(seed), "randn", key), dtype=torch.float32)
    return a.add_(noise.to(a.device, a.dtype), alpha=alpha)
