"""Modern merge methods: task vectors of fine-tunes over a shared base.

Each function gets fresh fp32 copies of one key's tensors: the base first (where there is one),
then the models. Random masks come from the key's own generator, drawn on the CPU. The methods
declared with streams=True may get Operands instead, read a slice at a time (operand.py, many.py).
"""

from __future__ import annotations

from typing import Annotated

import torch

from lib_merge.methods import many
from lib_merge.methods.calc import key_generator
from lib_merge.methods.operand import operands
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


def _bernoulli(shape, keep: torch.Tensor | float, seed: int, key: str, stream: int) -> torch.Tensor:
    """A 0/1 float mask (1 where a uniform draw falls below `keep`) from the key's own generator."""
    draw = torch.rand(shape, generator=key_generator(int(seed), str(stream), key), dtype=torch.float32)
    return draw.lt_(keep)


# The methods below read their inputs a slice at a time (many.py): up to 64 models besides A.


@merge_method("TIES", "method", at_least=1, streams=True)
def ties(base, *models, alpha: Weight = 1.0, density: Unit = 0.5, sign: Sign = "sum"):
    """base + α · disjoint mean of the trimmed deltas that agree with the elected sign."""
    base, *models = operands(base, *models)
    return many.ties(base, models, alpha, density, sign)


@merge_method("DARE", "method", at_least=1, streams=True)
def dare(base, *models, alpha: Weight = 1.0, p: DropRate = 0.5, seed: Seed = 0, key: str):
    """base + α · Σ (mask · δ / (1 − p)), mask ~ Bernoulli(1 − p) per model and key."""
    base, *models = operands(base, *models)
    return many.dare(base, models, alpha, p, seed, key, None)


@merge_method("DARE-TIES", "method", at_least=1, streams=True)
def dare_ties(base, *models, alpha: Weight = 1.0, p: DropRate = 0.5, seed: Seed = 0, sign: Sign = "sum", key: str):
    """DARE's rescaled random keep, then TIES's sign election instead of the sum."""
    base, *models = operands(base, *models)
    return many.dare(base, models, alpha, p, seed, key, sign)


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
        ranks[d.abs().reshape(-1).argsort().cpu()] = torch.arange(n, dtype=torch.float32)  # ranks live on the CPU
        q = (density - epsilon + 2 * epsilon * ranks / max(n - 1, 1)).clamp_(1e-6, 1).reshape(d.shape).to(d.device)
        mask = _bernoulli(d.shape, q.cpu(), seed, key, i).to(d.device)
        kept.append(d.mul_(mask).div_(q))
    tau = many.elect(kept, "sum") if elect else torch.stack(kept).sum(0)
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


@merge_method("geometric median", "method", at_least=2, streams=True)
def geometric_median(
    *models,
    eps: Annotated[float, Bounds(0.0, 1.0, enforce=True), SCALAR] = 1e-6,
    max_iter: Annotated[int, Bounds(1, 1e6, enforce=True)] = 100,
):
    """Weiszfeld's iteration from the mean."""
    return many.geometric_median(operands(*models), eps, max_iter)


@merge_method("model stock", "method", at_least=2, streams=True)
def model_stock(base, *models):
    """t·mean(M) + (1 − t)·base with t = n·c / (1 + (n − 1)·c), c = the mean pairwise cosine of the deltas."""
    base, *models = operands(base, *models)
    return many.model_stock(base, models)


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


@merge_method("N-model average", "method", at_least=2, elementwise=True, streams=True)
def n_average(*models, weights: Annotated[float | tuple[float, ...], Bounds(), PER_MODEL, SCALAR] = 1.0):
    """Σ wᵢ·Mᵢ / Σ wᵢ; one number (the default 1.0) means equal weights."""
    return many.average(operands(*models), weights if isinstance(weights, tuple) else None)


@merge_method("task arithmetic", "method", at_least=1, elementwise=True, passthrough=alpha_is_zero)
def task_arithmetic(base, *models, alpha: PerModelWeight = 1.0):
    """base + Σ αᵢ · (Mᵢ − base); one α for every model, or one per model."""
    alphas = alpha if isinstance(alpha, tuple) else (alpha,) * len(models)
    for weight, delta in zip(alphas, _deltas(base, models), strict=True):
        base = base.add_(delta, alpha=weight)
    return base
