"""The layout the median's program runs on, shared by its numba kernel and its numpy runner.

A tensor is laid out with its short axes (a convolution kernel's positions, 1–3 long) first and its
long axes after them: one row per short position over the long axes' plane. The plane goes through
block by block of its first axis, each block padded by one value on every long axis (a halo row of
the neighbouring block, or the repeated edge value: scipy's "reflect" with a window of 3), in
buffers made once, so that the memory stays in the caches and costs no page faults per block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lib_merge.methods.filter_program import median_program, plane_strides

SHORT = 3  # axes this short are kernel positions (rows of the program), longer ones are padded planes
BLOCK_ELEMENTS = 1 << 18  # a padded block and its result: 2 MiB, in the caches while the program runs

# runner(source rows, inputs, program, outputs, result rows, start, stop, scratch rows): filter_kernels.run_program
Runner = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, int], None]


def lay_out(values: np.ndarray) -> tuple[np.ndarray, list[int], int]:
    """(the array laid out, C-contiguous; the order of its axes in the original's; the number of short
    axes). Axes of length 1 are dropped: they hold each value three times in a window, which changes
    neither filter."""
    x = values.reshape([s for s in values.shape if s != 1] or [1])
    long_axes = [a for a in range(x.ndim) if x.shape[a] > SHORT] or [x.ndim - 1]
    order = [a for a in range(x.ndim) if a not in long_axes] + long_axes
    return np.ascontiguousarray(x.transpose(order)), order, x.ndim - len(long_axes)


def restore(laid: np.ndarray, order: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """The laid-out array back in the original's axis order and shape."""
    return np.ascontiguousarray(laid.transpose(np.argsort(order))).reshape(shape)


def median_laid_out(laid: np.ndarray, short: int, out: np.ndarray, runner: Runner) -> np.ndarray:
    """scipy's median_filter(size=3) of a laid-out array, into `out` (its shape, C-contiguous)."""
    positions, plane = laid.shape[:short], laid.shape[short:]
    rows = math.prod(positions)
    source, target = laid.reshape(rows, *plane), out.reshape(rows, *plane)
    program = median_program(len(plane), tuple(positions))
    row_size = math.prod(n + 2 for n in plane[1:])
    block = min(plane[0], max(1, BLOCK_ELEMENTS // (rows * row_size)))
    inner = (slice(None),) + (slice(1, -1),) * len(plane)
    padded_memory, result_memory = (np.empty(rows * (block + 2) * row_size, dtype=np.float32) for _ in range(2))
    for start in range(0, plane[0], block):
        stop = min(plane[0], start + block)
        shape = (rows, stop - start + 2, *(n + 2 for n in plane[1:]))
        padded = padded_memory[: math.prod(shape)].reshape(shape)
        padded[(slice(None), slice(None), *inner[2:])] = source[
            :, np.clip(np.arange(start - 1, stop + 1), 0, plane[0] - 1)
        ]
        _repeat_edges(padded)
        strides = plane_strides(shape[1:])
        flat = padded.reshape(rows, -1)
        result = result_memory[: flat.size].reshape(flat.shape)
        reach = sum(strides)
        runner(flat, program.inputs(strides), program.program, program.outputs, result, reach, flat.shape[1] - reach,
               program.slots)  # fmt: skip
        target[:, start:stop] = result.reshape(shape)[inner]
    return out


def _repeat_edges(padded: np.ndarray) -> None:
    """Fill the first and last index of every axis after the first two with its inner neighbour's values;
    axis 1 holds the block's halo rows already."""
    for axis in range(2, padded.ndim):
        edge = [slice(None)] * padded.ndim
        for outer, inside in ((0, 1), (-1, -2)):
            edge[axis] = outer
            source = list(edge)
            source[axis] = inside
            padded[tuple(edge)] = padded[tuple(source)]
