"""smoothAdd's filters on numba's compiled kernels (filter_kernels.py): scipy's values, many times faster.

The tensor is laid out once (filter_layout.py) so that every step runs along contiguous memory: the
median's program reads each position's plane at fixed offsets, and the Gaussian runs lines side by
side. The Gaussian goes through the axes in the tensor's own order, as scipy does (each axis rounds
to float32).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from lib_merge.methods.filter_kernels import gaussian_along, gaussian_along_last, run_program
from lib_merge.methods.filter_layout import lay_out, median_laid_out


def smooth_compiled(values: np.ndarray, weights: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """gaussian_filter(median_filter(values, size=3), sigma) for C-contiguous float32 of any rank ≥ 1 (not
    empty); `weights`: scipy's float64 Gaussian kernel. `overwrite`: the caller's values may be used as
    scratch once read (the result may then live in their memory).

    Arrays take turns as each step's input and output: fresh memory costs page faults.
    """
    laid, order, short = lay_out(values)
    copied = not np.shares_memory(laid, values)
    current = median_laid_out(laid, short, np.empty_like(laid), run_program)
    free = [laid] if copied or overwrite else []  # memory nothing reads any more
    if copied and overwrite:
        free.append(values.reshape(laid.shape))
    spare = free.pop() if free else np.empty_like(laid)
    for axis in range(laid.ndim):
        at = order.index(axis)
        if current.shape[at] > 1:
            current, spare = gaussian_axis(current, at, weights, spare), current
    result = current.transpose(np.argsort(order))
    if result.flags.c_contiguous:
        return result.reshape(values.shape)
    target = (free.pop() if free else np.empty_like(laid)).reshape(result.shape)
    np.copyto(target, result)
    return target.reshape(values.shape)


def gaussian_axis(x: np.ndarray, axis: int, weights: np.ndarray, out: np.ndarray) -> np.ndarray:
    """scipy's gaussian_filter1d along one axis (length > 1) of a C-contiguous float32 array, bit for bit,
    into `out` (C-contiguous, x's shape)."""
    n = x.shape[axis]
    taps = reflected_taps(n, len(weights) // 2)
    if axis == x.ndim - 1:
        gaussian_along_last(x.reshape(-1, n), out.reshape(-1, n), weights, taps)
    else:
        before, after = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
        gaussian_along(x.reshape(before, n, after), out.reshape(before, n, after), weights, taps)
    return out


@functools.cache
def reflected_taps(n: int, radius: int) -> np.ndarray:
    """taps[p, j]: the position read by tap j of output p, the line mirrored at its ends as often as
    the reach needs (scipy's "reflect": d c b a | a b c d | d c b a)."""
    at = (np.arange(n)[:, None] + np.arange(-radius, radius + 1)[None, :]) % (2 * n)
    taps = np.where(at < n, at, 2 * n - 1 - at)
    taps.flags.writeable = False
    return taps
