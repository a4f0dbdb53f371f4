"""smoothAdd's filters compiled by numba: the min/max program of the median and scipy's Gaussian steps.

Importing this module needs numba; filters.py falls back to its numpy arithmetic without it. The
kernels compile once per machine (numba's cache, next to this file or in the user's cache folder).

- `run_program` executes a straight list of min/max instructions (filter_program.py) on a tile of
  elements at a time, the tile's values in a scratch block that stays in the CPU's caches; each
  instruction is one loop over the tile, which the compiler turns into vector instructions.
- `gaussian_along` repeats, for one axis, scipy's `correlate1d` arithmetic for a symmetric kernel:
  in float64, the centre times its weight, then from the outermost pair in, (left + right) times the
  pair's weight added on; the sum rounded to float32. The same operations in the same order give
  the same bits (no fused multiply-add: numba does not contract without fastmath).
"""

from __future__ import annotations

import numba
import numpy as np

TILE = 512  # elements per tile: a 4-D kernel's ~250 scratch rows then fill about half of L2
STRETCH = 2048  # the Gaussian's float64 sums of one stretch of lines: 16 KiB, in L1


@numba.njit(nogil=True, cache=True, boundscheck=False)
def run_program(
    source: np.ndarray,
    inputs: np.ndarray,
    program: np.ndarray,
    outputs: np.ndarray,
    result: np.ndarray,
    start: int,
    stop: int,
    slots: int,
) -> None:
    """result[k, e] = the program's output k for element e, for e in [start, stop).

    inputs: rows (source row, offset from e, slot); program: rows (a, b, low, high) meaning
    low = min(a, b), high = max(a, b), a slot of −1 not written; outputs: the slot of each output.
    """
    scratch = np.empty((max(slots, 1), TILE), np.float32)
    for first in range(start, stop, TILE):
        width = min(TILE, stop - first)
        for k in range(inputs.shape[0]):
            at = first + inputs[k, 1]  # views, so that the loops index from 0 (no negative-index checks)
            line, into = source[inputs[k, 0], at : at + width], scratch[inputs[k, 2]]
            for i in range(width):
                into[i] = line[i]
        for k in range(program.shape[0]):
            a, b = scratch[program[k, 0]], scratch[program[k, 1]]
            low, high = program[k, 2], program[k, 3]
            if low >= 0 and high >= 0:
                lows, highs = scratch[low], scratch[high]
                for i in range(width):
                    x, y = a[i], b[i]
                    lows[i] = min(x, y)
                    highs[i] = max(x, y)
            elif low >= 0:
                lows = scratch[low]
                for i in range(width):
                    lows[i] = min(a[i], b[i])
            else:
                highs = scratch[high]
                for i in range(width):
                    highs[i] = max(a[i], b[i])
        for k in range(outputs.shape[0]):
            out, value = result[k, first : first + width], scratch[outputs[k]]
            for i in range(width):
                out[i] = value[i]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def gaussian_along(values: np.ndarray, out: np.ndarray, weights: np.ndarray, taps: np.ndarray) -> None:
    """One axis of scipy's gaussian_filter for float32 `values` seen as (before, axis, after), C-contiguous.

    taps[p, j]: the position along the axis that tap j of output p reads (the line reflected at its
    ends); weights: scipy's float64 kernel, centre at `radius`. Lines run side by side along `after`,
    a stretch at a time, so that the float64 sums stay in L1.
    """
    radius = weights.shape[0] // 2
    before, length, after = values.shape
    total = np.empty(STRETCH, np.float64)
    for o in range(before):
        for first in range(0, after, STRETCH):
            size = min(STRETCH, after - first)
            for p in range(length):
                centre = values[o, taps[p, radius], first : first + size]
                w = weights[radius]
                for i in range(size):
                    total[i] = np.float64(centre[i]) * w
                for j in range(radius, 0, -1):
                    left = values[o, taps[p, radius - j], first : first + size]
                    right = values[o, taps[p, radius + j], first : first + size]
                    w = weights[radius - j]
                    for i in range(size):
                        total[i] += (np.float64(left[i]) + np.float64(right[i])) * w
                line = out[o, p, first : first + size]
                for i in range(size):
                    line[i] = np.float32(total[i])


@numba.njit(nogil=True, cache=True, boundscheck=False)
def gaussian_along_last(values: np.ndarray, out: np.ndarray, weights: np.ndarray, taps: np.ndarray) -> None:
    """The same along the last axis of a C-contiguous (lines, length) array: the inner positions of a
    line side by side (their taps are the neighbours at fixed distances), the ends through `taps`."""
    radius = weights.shape[0] // 2
    lines, length = values.shape
    for o in range(lines):
        x, y = values[o], out[o]
        for p in range(min(radius, length)):
            y[p] = _one(x, weights, taps[p], radius)
        for p in range(max(length - radius, radius), length):
            y[p] = _one(x, weights, taps[p], radius)
        if length > 2 * radius:
            inner = length - 2 * radius
            centre = x[radius : radius + inner]
            w = weights[radius]
            total = np.empty(inner, np.float64)
            for i in range(inner):
                total[i] = np.float64(centre[i]) * w
            for j in range(radius, 0, -1):
                left, right = x[radius - j : radius - j + inner], x[radius + j : radius + j + inner]
                w = weights[radius - j]
                for i in range(inner):
                    total[i] += (np.float64(left[i]) + np.float64(right[i])) * w
            for i in range(inner):
                y[radius + i] = np.float32(total[i])


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _one(x: np.ndarray, weights: np.ndarray, taps: np.ndarray, radius: int) -> np.float32:
    total = np.float64(x[taps[radius]]) * weights[radius]
    for j in range(radius, 0, -1):
        total += (np.float64(x[taps[radius - j]]) + np.float64(x[taps[radius + j]])) * weights[radius - j]
    return np.float32(total)
