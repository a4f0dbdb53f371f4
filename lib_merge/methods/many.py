"""The many-model methods' arithmetic, a slice of every input at a time (see operand.py).

TIES and DARE(-TIES) are elementwise once each model's trim threshold (counted over all models
together) or its mask generator is known, so they give the same bits whatever the slicing. Model
stock and geometric median need sums over whole tensors (norms, dot products); those are added up
slice by slice in float64, where the whole-tensor versions summed in fp32: the results differ from
those in the last bits only (tests/test_many.py holds them to the formulas).

On the CPU with numba installed, TIES's threshold counts and its trim, election and mean run as
compiled kernels (many_kernels.py), with torch's bits; the torch arithmetic here is the path without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lib_merge.methods.calc import key_generator
from lib_merge.methods.operand import Operand, buffers, result_like, slice_size, slices

Combine = Callable[[torch.Tensor, int, int], torch.Tensor]  # (the slice's deltas, a row per model; start, end) -> τ


def elect(deltas: list[torch.Tensor], sign: str, spare: torch.Tensor | None = None) -> torch.Tensor:
    """TIES steps 2–3: the elected sign per element, then the mean of the deltas that agree with it.

    A delta agrees where δ·σ > 0, which leaves out zeros and elements without an elected sign.
    The deltas are consumed (one pass each, no stacked copy of all of them). `spare`: four buffers
    of at least their size (rows of a 2-D tensor) for the sums and temporaries; the result is the first.
    """
    shape, n = deltas[0].shape, deltas[0].numel()
    if spare is None:
        spare = torch.empty((4, n), dtype=deltas[0].dtype, device=deltas[0].device)
    total, count, sigma, tmp = (row[:n].view(shape) for row in spare[:4])
    total.zero_()
    for d in deltas:
        total.add_(torch.sign(d, out=tmp) if sign == "count" else d)  # "mean": the sign of the sum
    torch.sign(total, out=sigma)
    total.zero_()
    count.zero_()
    for d in deltas:
        agree = torch.mul(d, sigma, out=tmp).gt_(0)
        total.add_(d.mul_(agree))
        count.add_(agree)
    return total.div_(count.clamp_(min=1))


def read_rows(base: Operand, models: list[Operand], start: int, end: int, memory: torch.Tensor) -> torch.Tensor:
    """Elements [start, end) of the base (row 0) and of every model (rows 1…) in fp32, in `memory`
    (contiguous for every slice length: one kernel signature)."""
    work = memory[: (len(models) + 1) * (end - start)].view(len(models) + 1, end - start)
    base.read(start, end, work[0])
    for i, m in enumerate(models, 1):
        m.read(start, end, work[i])
    return work


def add_combined(base: Operand, models: list[Operand], alpha: float, combine: Combine) -> torch.Tensor:
    """base + α·combine(the models' deltas), one slice of every input at a time."""
    out = result_like(base)
    count = len(models) + 1
    memory = buffers(count, count, base).view(-1)
    for start, end in slices(base.numel, count):
        work = read_rows(base, models, start, end, memory)
        b = work[0]
        work[1:].sub_(b)
        torch.add(b, combine(work[1:], start, end), alpha=alpha, out=out[start:end])
    return out.reshape(base.shape)


def ties(base: Operand, models: list[Operand], alpha: float, density: float, sign: str) -> torch.Tensor:
    limits = trim_thresholds(base, models, density)
    spare = buffers(4, len(models) + 1, base)
    compiled, limits32 = _compiled(base), np.asarray(limits, np.float32)  # fp32 thresholds: exact

    def combine(deltas: torch.Tensor, start: int, end: int) -> torch.Tensor:
        if compiled is not None:  # trim, elect and mean in one kernel
            out = spare[0, : end - start]
            compiled.elect(deltas.numpy(), limits32, True, sign == "count", out.numpy())
            return out
        tmp = spare[3, : end - start]
        for d, t in zip(deltas, limits, strict=True):
            # multiplying by a 0/1 float mask is several times faster than masked_fill with a bool mask
            d.mul_(torch.abs(d, out=tmp).ge_(t))
        return elect(list(deltas), sign, spare)

    return add_combined(base, models, alpha, combine)


HALVES = 1 << 16  # values of 16 bits


def trim_thresholds(base: Operand, models: list[Operand], density: float) -> list[float]:
    """Each model's k-th largest |model − base| (k = ⌈density·numel⌉): elements at or above it survive the trim.

    Found from the bits, which sort as the values do for non-negative floats: a count of the top 16 bits
    of every model's |δ| finds the bucket that holds it, a count of the low 16 bits of that bucket's
    values the value. Two passes over all the inputs together, a slice at a time: nothing of a model's
    size is held, and the base is read once a pass. A NaN counts above +inf, as a sort puts it.
    """
    n = base.numel
    k = math.ceil(density * n)
    if k >= n or k <= 0:
        return [0.0 if k >= n else math.inf] * len(models)
    count = len(models) + 1
    memory = buffers(count, count, base).view(-1)
    if n <= slice_size(count):  # one slice: partitioned whole (the counts would cost more than the values)
        rows = _magnitude_bits(read_rows(base, models, 0, n, memory)).view(torch.float32).cpu().numpy()
        return [float(np.partition(row, n - k)[n - k]) for row in rows]  # NaN last, as a sort puts it
    kernels = _compiled(base)
    top, low = np.zeros((2, len(models), HALVES), np.int64)
    for start, end in slices(n, count):
        _count_top(read_rows(base, models, start, end, memory), top, kernels)
    buckets, above = _find_buckets(top, k)
    for start, end in slices(n, count):
        _count_low(read_rows(base, models, start, end, memory), buckets, low, kernels)
    rests, _ = _find_buckets(low, k - above)
    return [float(v) for v in ((buckets << 16) | rests).astype(np.uint32).view(np.float32)]


def _find_buckets(counts: np.ndarray, k: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `counts` (a model's values by bucket), the bucket of its k-th largest value and how many
    values lie in the buckets above."""
    from_top = np.cumsum(counts[:, ::-1], axis=1)
    ks = np.broadcast_to(np.asarray(k, np.int64), (counts.shape[0],))
    index = np.array([np.searchsorted(row, kk) for row, kk in zip(from_top, ks, strict=True)], np.int64)
    rows = np.arange(counts.shape[0])
    bucket = HALVES - 1 - index
    return bucket, from_top[rows, index] - counts[rows, bucket]


def _magnitude_bits(rows: torch.Tensor) -> torch.Tensor:
    """|model − base| of every model row, as the int32 bits of the floats (non-negative: they sort as the values)."""
    return rows[1:].sub(rows[0]).abs_().view(torch.int32)


def _count_top(rows: torch.Tensor, top: np.ndarray, kernels) -> None:  # noqa: ANN001 - many_kernels or None
    """Adds each model's count of its |δ| by the top 16 bits: numba's kernel, or torch's bincount where it is
    not used (no numba, a GPU)."""
    if kernels is not None:
        kernels.count_top(rows.numpy(), top)
        return
    for m, bits in enumerate(_magnitude_bits(rows)):
        top[m] += torch.bincount(bits >> 16, minlength=HALVES).cpu().numpy()


def _count_low(rows: torch.Tensor, buckets: np.ndarray, low: np.ndarray, kernels) -> None:  # noqa: ANN001
    """The same, by the low 16 bits, of the values in each model's bucket."""
    if kernels is not None:
        kernels.count_low(rows.numpy(), buckets, low)
        return
    for m, bits in enumerate(_magnitude_bits(rows)):
        inside = bits[(bits >> 16) == int(buckets[m])] & 0xFFFF
        low[m] += torch.bincount(inside, minlength=HALVES).cpu().numpy()


def dare(
    base: Operand, models: list[Operand], alpha: float, p: float, seed: int, key: str, tie: str | None
) -> torch.Tensor:
    """base + α·Σ or TIES-elect (mask·δ / (1 − p)); mask ~ Bernoulli(1 − p) from each model's own
    generator, drawn slice after slice (the same numbers as one draw of the whole shape)."""
    generators = [key_generator(int(seed), str(i), key) for i in range(len(models))]
    keep, scale = 1 - p, 1 / (1 - p)
    spare = buffers(5, len(models) + 1, base)
    compiled = _compiled(base) if tie else None

    def combine(deltas: torch.Tensor, start: int, end: int) -> torch.Tensor:
        draw = spare[4, : end - start]
        on_cpu = draw if draw.device.type == "cpu" else torch.empty_like(draw, device="cpu")
        for d, gen in zip(deltas, generators, strict=True):
            torch.rand(end - start, generator=gen, dtype=torch.float32, out=on_cpu)
            d.mul_(on_cpu.lt_(keep).mul_(scale).to(d.device))
        if compiled is not None:
            out = spare[0, : end - start]
            compiled.elect(deltas.numpy(), np.empty(0, np.float32), False, tie == "count", out.numpy())
            return out
        return elect(list(deltas), tie, spare) if tie else add_all(list(deltas))

    return add_combined(base, models, alpha, combine)


def _compiled(like: Operand):  # noqa: ANN202 - the module many_kernels, or None
    """numba's TIES kernels for inputs on the CPU, when numba is installed (they give torch's bits)."""
    if like.device.type != "cpu":
        return None
    try:
        from lib_merge.methods import many_kernels
    except ImportError:
        return None
    return many_kernels


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
    work = buffers(4, n + 1, base)
    squares = [0.0] * n
    for start, end in slices(numel, n + 1):
        b = base.read(start, end, work[0, : end - start])
        for i, m in enumerate(models):
            d = m.read(start, end, work[1, : end - start]).sub_(b)
            squares[i] += float(torch.dot(d, d))
    scales = {i: 1 / math.sqrt(q) for i, q in enumerate(squares) if q > 0}  # zero deltas have no direction
    out = result_like(base)
    summed = units = 0.0
    for start, end in slices(numel, n + 1):
        b, total, unit, x = (row[: end - start] for row in work)
        base.read(start, end, b)
        unit.zero_()
        for i, m in enumerate(models):
            m.read(start, end, x)
            total.copy_(x) if i == 0 else total.add_(x)
            if i in scales:
                u = x.sub_(b).mul_(scales[i])
                units += float(torch.dot(u, u))
                unit.add_(u)
        out[start:end] = total.div_(n)
        summed += float(torch.dot(unit, unit))
    pairs = len(scales) * (len(scales) - 1)
    c = (summed - units) / pairs if pairs else 0.0
    t = n * c / (1 + (n - 1) * c) if (1 + (n - 1) * c) != 0 else 0.0
    for start, end in slices(numel, n + 1):
        mean = out[start:end]
        mean.copy_(base.read(start, end, work[0, : end - start]).mul_(1 - t).add_(mean, alpha=t))
    return out.reshape(base.shape)


def geometric_median(models: list[Operand], eps: float, max_iter: int) -> torch.Tensor:
    """Weiszfeld's iteration from the mean, each step one pass over the inputs.

    A pass makes the next point slice by slice and adds up, as it goes, every model's squared
    distance to it (the next step's weights), the step's length and the old point's norm.
    """
    n, numel = len(models), models[0].numel
    x = result_like(models[0])
    work = buffers(n + 2, n, models[0])
    squares = [0.0] * n
    for start, end in slices(numel, n):
        parts = [m.read(start, end, work[i, : end - start]) for i, m in enumerate(models)]
        mean = work[n, : end - start]
        add_all([mean.copy_(parts[0]), *parts[1:]]).div_(n)
        x[start:end] = mean
        _add_distances(squares, parts, mean)
    for _ in range(int(max_iter)):
        w = 1 / torch.tensor(squares, dtype=torch.float64).sqrt_().to(torch.float32).clamp_(min=1e-8)
        weight_sum = w.sum()
        step = size = 0.0
        squares = [0.0] * n
        for start, end in slices(numel, n):
            parts = [m.read(start, end, work[i, : end - start]) for i, m in enumerate(models)]
            new, tmp = work[n, : end - start], work[n + 1, : end - start]
            torch.mul(parts[0], w[0], out=new)
            for p, wi in zip(parts[1:], w[1:], strict=True):
                new.add_(torch.mul(p, wi, out=tmp))
            new.div_(weight_sum)
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
    """Σ wᵢ·Mᵢ / Σ wᵢ, or the plain mean without weights (added up in the models' order, divided once)."""
    out = result_like(models[0])
    work = buffers(2, len(models), models[0])
    for start, end in slices(models[0].numel, len(models)):
        total, part = work[0, : end - start], work[1, : end - start]
        models[0].read(start, end, total)
        if weights is not None:
            total.mul_(weights[0])
        for i, model in enumerate(models[1:], 1):
            total.add_(model.read(start, end, part), alpha=1 if weights is None else weights[i])
        out[start:end] = total.div_(len(models) if weights is None else sum(weights))
    return out.reshape(models[0].shape)
