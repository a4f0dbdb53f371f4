"""Modern merge methods: task vectors of fine-tunes over a shared base.

Each function gets fresh fp32 copies of one key's tensors: the base first (where there is one),
then the models. Random masks come from the key's own generator, drawn on the CPU.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import torch

from lib_merge.methods.calc import key_generator
from lib_merge.methods.registry import (
    PER_MODEL,
    SCALAR,
    Bounds,
    DropRate,
    Seed,
    Sign,
    Unit,
    UnitScalar,
    Weight,
    alpha_at_an_end,
    alpha_is_zero,
    merge_method,
)

PerModelWeight = Annotated[float | tuple[float, ...], Bounds(), PER_MODEL]


def _deltas(base: torch.Tensor, models: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return [m.sub_(base) for m in models]


def _elect(deltas: list[torch.Tensor], sign: str) -> torch.Tensor:
    """TIES steps 2–3: the elected sign per element, then the mean of the deltas that agree with it.

    A delta agrees where δ·σ > 0, which leaves out zeros and elements without an elected sign.
    The deltas are consumed (one pass each, no stacked copy of all of them).
    """
    total = torch.zeros_like(deltas[0])
    for d in deltas:
        total.add_(torch.sign(d) if sign == "count" else d)  # "mean": the sign of the sum
    sigma = torch.sign(total)
    total.zero_()
    count = torch.zeros_like(total)
    for d in deltas:
        agree = (d * sigma).gt_(0).to(d.dtype)
        total.add_(d.mul_(agree))
        count.add_(agree)
    return total.div_(count.clamp_(min=1))


CHUNK = 1 << 18  # elements per slice of the elementwise stages: they stay in the CPU cache


def _threshold(delta: torch.Tensor, density: float) -> float:
    """The k-th largest |δ| (k = ⌈density·numel⌉): elements at or above it survive the trim."""
    n = delta.numel()
    k = math.ceil(density * n)
    if k >= n:
        return 0.0
    if k <= 0:
        return math.inf
    magnitude = delta.abs().reshape(-1)
    if magnitude.device.type == "cpu":  # numpy beats kthvalue; in place on this copy
        return kth_largest(magnitude.numpy(), k)
    return float(magnitude.kthvalue(n - k + 1).values)


SAMPLE = 4096


def kth_largest(values: np.ndarray, k: int) -> float:
    """The exact k-th largest of `values` (1 ≤ k ≤ size; may reorder them).

    A seeded sample brackets it; two counting passes find how many lie above the bracket, and
    only the few inside it are partitioned. A bracket that misses (it cannot, but for ties and
    bad luck) falls back to partitioning everything: the answer is exact either way.
    """
    n = values.size
    if n > 16 * SAMPLE:
        sample = np.sort(values[np.random.default_rng(n).integers(0, n, SAMPLE)])
        at = (n - k) / n * SAMPLE
        margin = 4 * math.isqrt(SAMPLE) + 8
        low = sample[max(0, int(at) - margin)]
        high = sample[min(SAMPLE - 1, int(at) + margin)]
        above = int(np.count_nonzero(values > high))
        if above < k:
            inside = values[(values >= low) & (values <= high)]
            need = k - above
            if need <= inside.size:
                inside.partition(inside.size - need)
                return float(inside[inside.size - need])
    values.partition(n - k)
    return float(values[n - k])


def _merge_slices(base: torch.Tensor, deltas: list[torch.Tensor], alpha: float, combine) -> torch.Tensor:
    """base + α·combine(slices of the deltas), slice by slice, so the temporaries stay small."""
    flat_base = base.reshape(-1)
    flats = [d.reshape(-1) for d in deltas]
    for start in range(0, flat_base.numel(), CHUNK):
        end = min(start + CHUNK, flat_base.numel())
        flat_base[start:end].add_(combine([f[start:end] for f in flats]), alpha=alpha)
    return base


@merge_method("TIES", "method", at_least=1)
def ties(base, *models, alpha: Weight = 1.0, density: Unit = 0.5, sign: Sign = "sum"):
    """base + α · disjoint mean of the trimmed deltas that agree with the elected sign."""
    deltas = _deltas(base, models)
    limits = [_threshold(d, density) for d in deltas]

    def combine(parts: list[torch.Tensor]) -> torch.Tensor:
        # multiplying by a 0/1 float mask is several times faster than masked_fill with a bool mask
        trimmed = [p.mul_(p.abs().ge_(t)) for p, t in zip(parts, limits, strict=True)]
        return _elect(trimmed, sign)

    return _merge_slices(base, deltas, alpha, combine)


def _bernoulli(shape, keep: torch.Tensor | float, seed: int, key: str, stream: int) -> torch.Tensor:
    """A 0/1 float mask (1 where a uniform draw falls below `keep`) from the key's own generator."""
    draw = torch.rand(shape, generator=key_generator(int(seed), str(stream), key), dtype=torch.float32)
    return draw.lt_(keep)


def _dare_deltas(base, models, p: float, seed: int, key: str) -> list[torch.Tensor]:
    out = []
    for i, d in enumerate(_deltas(base, models)):
        scaled_mask = _bernoulli(d.shape, 1 - p, seed, key, i).mul_(1 / (1 - p)).to(d.device)
        out.append(d.mul_(scaled_mask))
    return out


@merge_method("DARE", "method", at_least=1)
def dare(base, *models, alpha: Weight = 1.0, p: DropRate = 0.5, seed: Seed = 0, key: str):
    """base + α · Σ (mask · δ / (1 − p)), mask ~ Bernoulli(1 − p) per model and key."""
    deltas = _dare_deltas(base, models, p, seed, key)
    return _merge_slices(base, deltas, alpha, lambda parts: _sum(parts))


@merge_method("DARE-TIES", "method", at_least=1)
def dare_ties(base, *models, alpha: Weight = 1.0, p: DropRate = 0.5, seed: Seed = 0, sign: Sign = "sum", key: str):
    deltas = _dare_deltas(base, models, p, seed, key)
    return _merge_slices(base, deltas, alpha, lambda parts: _elect(parts, sign))


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:
    total = parts[0]
    for part in parts[1:]:
        total = total.add_(part)
    return total


@merge_method("DELLA", "method", at_least=1)
def della(
    base,
    *models,
    alpha: Weight = 1.0,
    density: Unit = 0.5,
    epsilon: UnitScalar = 0.1,
    seed: Seed = 0,
    elect: bool = True,
    key: str,
):
    """Keep probabilities rise with |δ|'s rank from density − ε to density + ε; survivors are rescaled."""
    kept = []
    for i, d in enumerate(_deltas(base, models)):
        n = d.numel()
        ranks = torch.empty(n, dtype=torch.float32)
        ranks[d.abs().reshape(-1).argsort()] = torch.arange(n, dtype=torch.float32)
        q = (density - epsilon + 2 * epsilon * ranks / max(n - 1, 1)).clamp_(1e-6, 1).reshape(d.shape).to(d.device)
        mask = _bernoulli(d.shape, q.cpu(), seed, key, i).to(d.device)
        kept.append(d.mul_(mask).div_(q))
    tau = _elect(kept, "sum") if elect else torch.stack(kept).sum(0)
    return base.add_(tau, alpha=alpha)


@merge_method("SLERP", "method", passthrough=alpha_at_an_end)
def slerp(a, b, *, alpha: Weight = 0.5):
    """Spherical interpolation of the flat tensors, scaled back to the interpolated norm."""
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return a.lerp_(b, alpha)
    ua, ub = a / na, b / nb
    omega = torch.arccos(torch.clamp((ua.reshape(-1) @ ub.reshape(-1)), -1, 1))
    so = torch.sin(omega)
    if so < 1e-6:
        return a.lerp_(b, alpha)
    mixed = (torch.sin((1 - alpha) * omega) * ua + torch.sin(alpha * omega) * ub) / so
    return mixed.mul_((1 - alpha) * na + alpha * nb)


@merge_method("geometric median", "method", at_least=2)
def geometric_median(
    *models,
    eps: Annotated[float, Bounds(0.0, 1.0, enforce=True), SCALAR] = 1e-6,
    max_iter: Annotated[int, Bounds(1, 1e6, enforce=True)] = 100,
):
    """Weiszfeld's iteration from the mean."""
    stack = torch.stack(models)
    x = stack.mean(0)
    for _ in range(int(max_iter)):
        dist = (stack - x).reshape(len(models), -1).norm(dim=1).clamp_(min=1e-8)
        w = (1 / dist).reshape((-1,) + (1,) * x.dim())
        new = (stack * w).sum(0) / w.sum()
        done = (new - x).norm() <= eps * max(float(x.norm()), 1.0)
        x = new
        if done:
            break
    return x


@merge_method("model stock", "method", at_least=2)
def model_stock(base, *models):
    """t·mean(M) + (1 − t)·base with t = n·c / (1 + (n − 1)·c), c = the mean pairwise cosine of the deltas."""
    n = len(models)
    mean = torch.stack(models).mean(0)
    deltas = [m - base for m in models]
    cosines = []
    for i in range(n):
        for j in range(i + 1, n):
            ni, nj = deltas[i].norm(), deltas[j].norm()
            if ni > 0 and nj > 0:
                cosines.append(float((deltas[i].reshape(-1) @ deltas[j].reshape(-1)) / (ni * nj)))
    c = sum(cosines) / len(cosines) if cosines else 0.0
    t = n * c / (1 + (n - 1) * c) if (1 + (n - 1) * c) != 0 else 0.0
    return base.mul_(1 - t).add_(mean, alpha=t)


@merge_method("add perpendicular", "method", passthrough=alpha_is_zero)
def add_perpendicular(a, b, c, *, alpha: Weight = 1.0):
    """a + α · the part of (b − c) perpendicular to (a − c)."""
    u, v = a - c, b.sub_(c)
    uu = float(u.reshape(-1) @ u.reshape(-1))
    perp = v if uu == 0 else v.sub_(u, alpha=float(u.reshape(-1) @ v.reshape(-1)) / uu)
    return a.add_(perp, alpha=alpha)


@merge_method("weights clipping", "op", elementwise=True)
def clip(x, a, b):
    """Weights clipping: x limited to the range that a and b span, elementwise."""
    return torch.minimum(torch.maximum(x, torch.minimum(a, b)), torch.maximum(a, b))


@merge_method("N-model average", "method", at_least=2, elementwise=True)
def n_average(*models, weights: Annotated[float | tuple[float, ...], Bounds(), PER_MODEL, SCALAR] = 1.0):
    """Σ wᵢ·Mᵢ / Σ wᵢ; one number (the default 1.0) means equal weights."""
    if not isinstance(weights, tuple):
        return torch.stack(models).mean(0)
    total = models[0].mul_(weights[0])
    for weight, model in zip(weights[1:], models[1:], strict=True):
        total.add_(model, alpha=weight)
    return total.div_(sum(weights))


@merge_method("task arithmetic", "method", at_least=1, elementwise=True, passthrough=alpha_is_zero)
def task_arithmetic(base, *models, alpha: PerModelWeight = 1.0):
    """base + Σ αᵢ · (Mᵢ − base); one α for every model, or one per model."""
    alphas = alpha if isinstance(alpha, tuple) else (alpha,) * len(models)
    for weight, delta in zip(alphas, _deltas(base, models), strict=True):
        base = base.add_(delta, alpha=weight)
    return base
