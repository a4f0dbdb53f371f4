"""TIES's two costly steps compiled by numba (many.py uses them on the CPU when numba is installed).

- `count_top`, `count_low`: the counts by the bits of every model's |δ| from which trim_thresholds
  finds each model's exact k-th largest (the bits of non-negative floats sort as the values do),
  computed from a slice of the inputs as they are read: no |δ| is stored, no sort.
- `elect`: TIES's sign election and disjoint mean over one slice of every model's delta, in two
  passes per model instead of torch's ten. The operations and their order are torch's (fp32 sums in
  the models' order, one division), so the bits are the same.
"""

from __future__ import annotations

import numba
import numpy as np

TILE = 4096  # elements of a slice at a time: the sums in L1, every model's tile in L2


@numba.njit(nogil=True, cache=True, boundscheck=False)
def count_top(rows: np.ndarray, top: np.ndarray) -> None:
    """Adds to top[m] the count of |rows[m + 1] − rows[0]| (a model's |δ| over one slice) by the top 16 bits
    of the float32: the first of trim_thresholds' two counts (many.py), with no |δ| written anywhere."""
    base = rows[0]
    for m in range(rows.shape[0] - 1):
        row, counts = rows[m + 1], top[m]
        for i in range(base.size):
            counts[np.float32(abs(row[i] - base[i])).view(np.uint32) >> 16] += 1


@numba.njit(nogil=True, cache=True, boundscheck=False)
def count_low(rows: np.ndarray, buckets: np.ndarray, low: np.ndarray) -> None:
    """The second: of the |δ| whose top 16 bits are the model's bucket, the count by the low 16 bits."""
    base = rows[0]
    for m in range(rows.shape[0] - 1):
        row, counts, bucket = rows[m + 1], low[m], buckets[m]
        for i in range(base.size):
            bits = np.float32(abs(row[i] - base[i])).view(np.uint32)
            if bits >> 16 == bucket:
                counts[bits & 0xFFFF] += 1


@numba.njit(nogil=True, cache=True, boundscheck=False)
def elect(deltas: np.ndarray, limits: np.ndarray, trim: bool, count_signs: bool, out: np.ndarray) -> None:
    """out = TIES's merged delta of one slice: deltas (models, width), each trimmed to |δ| ≥ its limit
    when `trim` (in place: zero below it), then the sign elected by the count of signs or the sign of
    the sum, then the mean of the deltas that agree with it (δ·σ > 0), 0 where none does.

    Tile by tile of the width, so that the sums and the tile of every model stay in the caches.
    """
    models, width = deltas.shape
    total = np.empty(TILE, np.float32)
    count = np.empty(TILE, np.float32)
    for first in range(0, width, TILE):
        size = min(TILE, width - first)
        total[:size] = 0
        for m in range(models):
            d = deltas[m, first : first + size]
            if trim:
                limit = limits[m]
                for i in range(size):  # times 1 or 0, as torch masks: a NaN stays, a negative δ leaves −0
                    d[i] *= np.float32(1.0) if abs(d[i]) >= limit else np.float32(0.0)
            if count_signs:
                for i in range(size):
                    total[i] += _sign(d[i])
            else:
                for i in range(size):
                    total[i] += d[i]
        result = out[first : first + size]
        for i in range(size):  # total becomes σ; the sums start again in `result`
            total[i] = _sign(total[i])
            result[i] = 0
            count[i] = 0
        for m in range(models):
            d = deltas[m, first : first + size]
            for i in range(size):
                agree = np.float32(1.0) if d[i] * total[i] > 0 else np.float32(0.0)
                result[i] += d[i] * agree
                count[i] += agree
        for i in range(size):
            result[i] /= max(count[i], np.float32(1.0))


@numba.njit(nogil=True, cache=True, inline="always")
def _sign(x: float) -> float:
    """torch.sign: 0 for ±0 and NaN."""
    return np.float32(1.0) if x > 0 else (np.float32(-1.0) if x < 0 else np.float32(0.0))
