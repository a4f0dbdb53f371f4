"""smoothAdd's filters: scipy.ndimage's size-3 median ("reflect" edges) computed exactly, and fast.

smoothAdd (SuperMerger's) filters each difference with `median_filter(d, size=3)` and then
`gaussian_filter(.., sigma=1)` over every dimension. scipy's median takes twelve minutes for an
SD1.5 model, nearly all of it on the 3⁴ = 81 values around each element of a 3×3 convolution
weight, each window sorted on its own. Here the median is a selection by min/max networks
(Batcher's odd-even merge): axis after axis, sorted runs of the window's values are merged, each
merge shared by the neighbouring windows that hold both runs; along the last axis only the middle
rank is selected. A selection copies a value, so the result is scipy's, bit for bit (NaN aside:
scipy's own order of NaNs is arbitrary). "reflect" with a window of 3 repeats the edge value.

The Gaussian is scipy's own along long axes; along axes of 1–3 positions (kernels), where scipy
sets up a line for every three values, numpy repeats its float64 steps over all lines at once.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch

# Elements per comparison: the arrays in flight stay in the caches and the calls are few. A kernel's
# 81-value windows keep hundreds of arrays in flight, a linear layer's 9-value windows a few dozen.
PLANE_ELEMENTS = 1 << 14
PLANE_ELEMENTS_WITHOUT_SHORT_AXES = 1 << 16
GAUSSIAN_BLOCK = 1 << 18  # elements of one block of lines (larger blocks: fewer calls; measured best)
RADIUS = 4  # scipy's Gaussian reach: int(truncate · σ + 0.5), truncate 4, σ 1
SHORT = 3  # axes this short (convolution kernels) are held as one run per position

# A comparator (i, j, keep_min, keep_max): slot i gets min(i, j), slot j gets max(i, j);
# a half that nothing downstream reads is not computed.
Network = tuple[tuple[tuple[int, int, bool, bool], ...], tuple[int, ...]]


def _odd_even_merge(a: list[int], b: list[int], comparators: list[tuple[int, int]]) -> list[int]:
    """Batcher's merge of two sorted runs of slots (any lengths); returns the slots in sorted order."""
    if not a or not b:
        return a + b
    if len(a) == 1 and len(b) == 1:
        comparators.append((a[0], b[0]))
        return [a[0], b[0]]
    evens = _odd_even_merge(a[0::2], b[0::2], comparators)
    odds = _odd_even_merge(a[1::2], b[1::2], comparators)
    merged = [evens[0]]
    i = 0
    while i < len(odds) and i + 1 < len(evens):
        comparators.append((odds[i], evens[i + 1]))
        merged += [odds[i], evens[i + 1]]
        i += 1
    return merged + odds[i:] + evens[i + 1 :]


@functools.cache  # a pure function of its arguments: the same few networks serve every tensor
def merge_network(m: int, n: int, ranks: tuple[int, ...] | None = None) -> Network:
    """Comparators merging sorted runs of m and n values, pruned to the output ranks asked for (0-based)."""
    comparators: list[tuple[int, int]] = []
    order = _odd_even_merge(list(range(m)), list(range(m, m + n)), comparators)
    wanted = range(m + n) if ranks is None else ranks
    live = {order[r] for r in wanted}
    kept = []
    for i, j in reversed(comparators):
        keep_min, keep_max = i in live, j in live
        if keep_min or keep_max:
            kept.append((i, j, keep_min, keep_max))
            live |= {i, j}
    return tuple(reversed(kept)), tuple(order[r] for r in wanted)


def _merge(network: Network, a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    """Run a network on sorted runs of arrays; results reuse the arrays this call made (fewer fresh pages).

    The loop runs once per comparison of every chunk, so it is kept to plain local operations.
    """
    comparators, order = network
    slots: list[np.ndarray | None] = [*a, *b]
    made: set[int] = set()  # ids of the arrays made here: only the slots hold them (the inputs outlive the call)
    minimum, maximum, mark = np.minimum, np.maximum, made.add
    for i, j, keep_min, keep_max in comparators:
        x, y = slots[i], slots[j]
        if x is y:  # a value against itself (an edge window repeats its edge): nothing to exchange
            continue
        spare = x if id(x) in made else y if id(y) in made else None
        low = high = None
        if keep_min:
            low = minimum(x, y) if keep_max else minimum(x, y, out=spare)
            mark(id(low))
        if keep_max:
            high = maximum(x, y, out=spare)
            mark(id(high))
        slots[i], slots[j] = low, high
    return [slots[k] for k in order]


def _doubled(run: list[np.ndarray]) -> list[np.ndarray]:
    """A sorted run merged with itself: every value twice, in order (no comparison needed)."""
    return [t for t in run for _ in (0, 1)]


def _band(m: int) -> tuple[int, ...]:
    """The ranks (0-based) of a merged pair that the selection of the middle of 3m values reads."""
    k = (3 * m + 1) // 2
    return tuple(range(k - m - 1, k))


def _middle(pair_band: list[np.ndarray], run: list[np.ndarray]) -> np.ndarray:
    """The middle of the 3m values X ∪ C: X the sorted 2m of two neighbours (its _band ranks), C a sorted m.

    The k-th smallest of two sorted runs is min over c of max(C[c], X[k − c]) (1-based, C[0] = −∞).
    """
    m = len(run)
    result = np.minimum(pair_band[-1], np.maximum(run[0], pair_band[m - 1]))  # c = 0 and c = 1
    scratch = np.empty_like(result)
    for c in range(2, m + 1):
        np.minimum(result, np.maximum(run[c - 1], pair_band[m - c], out=scratch), out=result)
    return result


def _along_long_axis(run: list[np.ndarray], final: bool, halo: bool) -> list[np.ndarray]:
    """One level along the leading axis: sorted runs of 3m from runs of m (or the middle value, if final).

    The merge of each position's run with its left neighbour's is shared by the two windows holding
    both. With `halo`, the arrays already hold one neighbour each side; else the edge values are
    repeated ("reflect" with a window of 3). Slices of the leading axis are contiguous, which the
    comparisons need to run at full speed.
    """
    m = len(run)
    if not halo:
        run = [np.concatenate((t[:1], t, t[-1:])) for t in run]
    n = len(run[0]) - 2
    pairs = n if final else n + 1
    left, centre, right = [t[:pairs] for t in run], [t[1 : pairs + 1] for t in run], [t[2:] for t in run]
    if final:
        return [_middle(_merge(merge_network(m, m, _band(m)), left, centre), right)]
    merged = _merge(merge_network(m, m), left, centre)
    return _merge(merge_network(2 * m, m), [p[:n] for p in merged], right)


def _along_short_axis(runs: list[list[np.ndarray]], final: bool) -> list[list[np.ndarray]]:
    """One level along an axis of 2 or 3 positions, given as one run per position.

    At the edges a window holds its edge position twice: the doubled run needs no comparison, so
    an end window pairs it with its inner neighbour, and only the middle pair is merged.
    """
    n, m = len(runs), len(runs[0])
    band = _band(m)
    out = []
    for p in range(n):
        if p in (0, n - 1):
            pair, other = _doubled(runs[p]), runs[1 if p == 0 else n - 2]
            if final:
                out.append([_middle(pair[band[0] : band[-1] + 1], other)])
            else:
                out.append(_merge(merge_network(2 * m, m), pair, other))
        elif final:
            out.append([_middle(_merge(merge_network(m, m, band), runs[p - 1], runs[p]), runs[p + 1])])
        else:
            out.append(_merge(merge_network(2 * m, m), _merge(merge_network(m, m), runs[p - 1], runs[p]), runs[p + 1]))
    return out


def _to_front(run: list[np.ndarray], axis: int) -> list[np.ndarray]:
    return run if axis == 0 else [np.ascontiguousarray(np.moveaxis(t, axis, 0)) for t in run]


def median_filter3(values: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.median_filter(values, size=3) (mode "reflect"), for float32 of any rank ≥ 1.

    Axes of length 1 hold each value three times in every window, which leaves the median alone,
    so they are dropped. Long axes come first, each brought to the front of contiguous planes
    (comparisons run at full speed only on contiguous memory); the longest is cut into chunks with
    a halo of one. Short axes (2 or 3, as a convolution kernel's) come last, one plane per
    position, where edge windows save a merge.
    """
    shape = values.shape
    x = values.detach().cpu().numpy().reshape([s for s in shape if s != 1] or [1])
    long_axes = sorted((a for a in range(x.ndim) if x.shape[a] > SHORT), key=lambda a: -x.shape[a])
    long_axes = long_axes or [x.ndim - 1]
    short_axes = [a for a in range(x.ndim) if a not in long_axes]
    x = x.transpose(long_axes + short_axes)  # planes: the long axes, largest first; one per short position
    k, n = len(long_axes), x.shape[0]
    out = np.empty(x.shape, dtype=x.dtype)
    plane = PLANE_ELEMENTS if short_axes else PLANE_ELEMENTS_WITHOUT_SHORT_AXES
    rows = max(1, plane // max(1, math.prod(x.shape[1:k])))
    positions = list(itertools.product(*(range(size) for size in x.shape[k:])))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = x[np.clip(np.arange(start - 1, stop + 1), 0, n - 1)]
        runs = {}
        for position in positions:
            run = [np.ascontiguousarray(block[(Ellipsis, *position)])]
            for level in range(k):  # the plane's axes turn round: each level's axis comes to the front
                final = not short_axes and level == k - 1
                run = _along_long_axis(_to_front(run, k - 1 if level else 0), final, halo=not level)
            runs[position] = run
        for axis in range(len(short_axes)):
            final = axis == len(short_axes) - 1
            for line in _lines(positions, axis):
                for position, run in zip(line, _along_short_axis([runs[p] for p in line], final), strict=True):
                    runs[position] = run
        for position, (plane,) in runs.items():
            out[(slice(start, stop), *[slice(None)] * (k - 1), *position)] = np.moveaxis(plane, k - 1, 0)
    return torch.from_numpy(out.transpose(np.argsort(long_axes + short_axes)).reshape(shape))


def _lines(positions: list[tuple[int, ...]], axis: int) -> list[list[tuple[int, ...]]]:
    """The positions grouped into lines along one short axis, each in order along it."""
    lines: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for position in positions:
        lines.setdefault(position[:axis] + position[axis + 1 :], []).append(position)
    return list(lines.values())


def _gaussian_weights() -> np.ndarray:
    """scipy's normalised kernel for σ = 1 and its radius 4, computed as scipy computes it (float64)."""
    x = np.arange(-RADIUS, RADIUS + 1)
    phi = np.exp(-0.5 / 1 * x**2)
    return phi / phi.sum()


def _gaussian_along_short_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """scipy's gaussian_filter1d(x, 1, axis) for an axis of at most SHORT positions, bit for bit.

    scipy's arithmetic for each output position: in float64, the centre times its weight, then from
    the outermost pair in, (left + right) times the pair's weight added on; the line extended by
    reflection (period twice its length). scipy pays a line set-up for every three values here;
    side by side, the lines cost a few array operations.
    """
    n, w = x.shape[axis], _gaussian_weights()
    out = np.empty_like(x)
    rows = max(1, GAUSSIAN_BLOCK // max(1, x[0].size)) if axis else len(x)
    for start in range(0, len(x), rows):
        block = x[start : start + rows]
        planes = [np.take(block, k, axis).astype(np.float64) for k in range(n)]
        for p in range(n):
            at = np.arange(p - RADIUS, p + RADIUS + 1) % (2 * n)
            at = np.where(at < n, at, 2 * n - 1 - at)
            acc = planes[at[RADIUS]] * w[RADIUS]
            for j in range(RADIUS, 0, -1):
                pair = planes[at[RADIUS - j]] + planes[at[RADIUS + j]]
                pair *= w[RADIUS - j]
                acc += pair
            out[start : start + rows][(slice(None),) * axis + (p,)] = acc
    return out


def gaussian_filter1(values: np.ndarray) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(values, sigma=1) for float32: scipy's own along long axes, axis by axis."""
    from scipy.ndimage import gaussian_filter1d

    x = values
    for axis in range(x.ndim):
        x = _gaussian_along_short_axis(x, axis) if x.shape[axis] <= SHORT else gaussian_filter1d(x, 1, axis)
    return x


def smooth(difference: torch.Tensor) -> torch.Tensor:
    """gaussian_filter(median_filter(d, size=3), sigma=1), scipy's defaults, for any rank ≥ 1 (float32)."""
    if not difference.numel():  # an empty tensor: nothing to filter (and no first row to size a chunk by)
        return difference.float()
    return torch.from_numpy(gaussian_filter1(median_filter3(difference.float()).numpy()))
