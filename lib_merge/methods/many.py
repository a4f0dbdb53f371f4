"""The many-model methods' arithmetic, a slice of every input at a time (see operand.py).

TIES and DARE(-TIES) are elementwise once each model's trim threshold (one model at a time) or its
mask generator is known, so they give the same bits whatever the slicing. Model stock and geometric
median need sums over whole tensors (norms, dot products); those are added up slice by slice in
float64, where the whole-tensor versions summed in fp32: the results differ from those in the last
bits only (tests/test_many.py holds them to the formulas).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lib_merge.methods.calc import key_generator
from lib_merge.methods.operand import Operand, result_like, slices

Combine = Callable[[list[torch.Tensor], int, int], torch.Tensor]  # (deltas of one slice, start, end) -> τ


def elect(deltas: list[torch.Tensor], sign: str) -> torch.Tensor:
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


def add_combined(base: Operand, models: list[Operand], alpha: float, combine: Combine) -> torch.Tensor:
    """base + α·combine(the models' deltas), one slice of every input at a time."""
    out = result_like(base)
    for start, end in slices(base.numel, len(models) + 1):
        b = base.read(start, end)
        deltas = [m.read(start, end).sub_(b) for m in models]
        torch.add(b, combine(deltas, start, end), alpha=alpha, out=out[start:end])
    return out.reshape(base.shape)


def ties(base: Operand, models: list[Operand], alpha: float, density: float, sign: str) -> torch.Tensor:
    scratch: list[torch.Tensor] = []  # one input's magnitudes, reused for every model
    limits = [trim_threshold(base, m, density, scratch) for m in models]

    def combine(deltas: list[torch.Tensor], start: int, end: int) -> torch.Tensor:
        # multiplying by a 0/1 float mask is several times faster than masked_fill with a bool mask
        return elect([d.mul_(d.abs().ge_(t)) for d, t in zip(deltas, limits, strict=True)], sign)

    return add_combined(base, models, alpha, combine)


def trim_threshold(base: Operand, model: Operand, density: float, scratch: list[torch.Tensor]) -> float:
    """The k-th largest |model − base| (k = ⌈density·numel⌉): elements at or above it survive the trim."""
    n = base.numel
    k = math.ceil(density * n)
    if k >= n:
        return 0.0
    if k <= 0:
        return math.inf
    if not scratch:
        scratch.append(result_like(base))
    magnitude = scratch[0]
    for start, end in slices(n, 2):
        torch.sub(model.read(start, end), base.read(start, end), out=magnitude[start:end]).abs_()
    if magnitude.device.type == "cpu":  # numpy beats kthvalue; in place on the scratch buffer
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


def dare(
    base: Operand, models: list[Operand], alpha: float, p: float, seed: int, key: str, tie: str | None
) -> torch.Tensor:
    """base + α·Σ or TIES-elect (mask·δ / (1 − p)); mask ~ Bernoulli(1 − p) from each model's own
    generator, drawn slice after slice (the same numbers as one draw of the whole shape)."""
    generators = [key_generator(int(seed), str(i), key) for i in range(len(models))]
    keep, scale = 1 - p, 1 / (1 - p)

    def combine(deltas: list[torch.Tensor], start: int, end: int) -> torch.Tensor:
        for d, gen in zip(deltas, generators, strict=True):
            draw = torch.rand(end - start, generator=gen, dtype=torch.float32)
            d.mul_(draw.lt_(keep).mul_(scale).to(d.device))
        return elect(deltas, tie) if tie else add_all(deltas)

    return add_combined(base, models, alpha, combine)


def add_all(parts: list[torch.Tensor]) -> torch.Tensor:
    total = parts[0]
    for part in parts[1:]:
        total = total.add_(part)
    return total


def model_stock(base: Operand, models: list[Operand]) -> torch.Tensor:
    """t·mean(M) + (1 − t)·base, t = n·c / (1 + (n − 1)·c), c the mean pairwise cosine of the nonzero deltas.

    The pairs' cosines come without a pass per pair: with uᵢ = δᵢ/|δᵢ|, Σ_{i<j} uᵢ·uⱼ = (|Σuᵢ|² − Σ|uᵢ|²)/2.
    One pass for the norms, one for the mean and Σuᵢ, one to mix with the base.
    """
    n, numel = len(models), base.numel
    squares = [0.0] * n
    for start, end in slices(numel, n + 1):
        b = base.read(start, end)
        for i, m in enumerate(models):
            d = m.read(start, end).sub_(b)
            squares[i] += float(torch.dot(d, d))
    scales = {i: 1 / math.sqrt(q) for i, q in enumerate(squares) if q > 0}  # zero deltas have no direction
    out = result_like(base)
    summed = units = 0.0
    for start, end in slices(numel, n + 1):
        b = base.read(start, end)
        total, unit = None, torch.zeros_like(b)
        for i, m in enumerate(models):
            x = m.read(start, end)
            total = x.clone() if total is None else total.add_(x)
            if i in scales:
                u = x.sub_(b).mul_(scales[i])
                units += float(torch.dot(u, u))
                unit.add_(u)
        out[start:end] = total.div_(n)
        summed += float(torch.dot(unit, unit))
    pairs = len(scales) * (len(scales) - 1)
    c = (summed - units) / pairs if pairs else 0.0
    t = n * c / (1 + (n - 1) * c) if (1 + (n - 1) * c) != 0 else 0.0
    for start, end in slices(numel, 2):
        mean = out[start:end]
        mean.copy_(base.read(start, end).mul_(1 - t).add_(mean, alpha=t))
    return out.reshape(base.shape)


def geometric_median(models: list[Operand], eps: float, max_iter: int) -> torch.Tensor:
    """Weiszfeld's iteration from the mean, each step one pass over the inputs.

    A pass makes the next point slice by slice and adds up, as it goes, every model's squared
    distance to it (the next step's weights), the step's length and the old point's norm.
    """
    n, numel = len(models), models[0].numel
    x = result_like(models[0])
    squares = [0.0] * n
    for start, end in slices(numel, n):
        parts = [m.read(start, end) for m in models]
        mean = add_all([parts[0].clone(), *parts[1:]]).div_(n)
        x[start:end] = mean
        _add_distances(squares, parts, mean)
    for _ in range(int(max_iter)):
        w = 1 / torch.tensor(squares, dtype=torch.float64).sqrt_().to(torch.float32).clamp_(min=1e-8)
        weight_sum = w.sum()
        step = size = 0.0
        squares = [0.0] * n
        for start, end in slices(numel, n):
            parts = [m.read(start, end) for m in models]
            new = add_all([p * wi for p, wi in zip(parts, w, strict=True)]).div_(weight_sum)
            old = x[start:end]
            size += float(torch.dot(old, old))
            old.sub_(new)
            step += float(torch.dot(old, old))
            old.copy_(new)
            _add_distances(squares, parts, new)
        if math.sqrt(step) <= eps * max(math.sqrt(size), 1.0):
            break
    return x.reshape(models[0].shape)


def _add_distances(squares: list[float], parts: list[torch.Tensor], point: torch.Tensor) -> None:
    for i, p in enumerate(parts):
        d = p.sub_(point)
        squares[i] += float(torch.dot(d, d))


def average(models: list[Operand], weights: tuple[float, ...] | None) -> torch.Tensor:
    """Σ wᵢ·Mᵢ / Σ wᵢ, or the plain mean without weights."""
    out = result_like(models[0])
    for start, end in slices(models[0].numel, len(models)):
        if weights is None:
            total = add_all([m.read(start, end) for m in models]).div_(len(models))
        else:
            total = models[0].read(start, end).mul_(weights[0])
            for weight, model in zip(weights[1:], models[1:], strict=True):
                total.add_(model.read(start, end), alpha=weight)
            total.div_(sum(weights))
        out[start:end] = total
    return out.reshape(models[0].shape)
