"""smoothAdd's filters: scipy.ndimage's size-3 median ("reflect" edges) and σ-1 Gaussian, exactly, and fast.

smoothAdd (SuperMerger's) filters each difference with `median_filter(d, size=3)` and then
`gaussian_filter(.., sigma=1)` over every dimension. scipy's median takes twelve minutes for an
SD1.5 model, nearly all of it on the 3⁴ = 81 values around each element of a 3×3 convolution
weight, each window sorted on its own. Here the median is a selection by min/max networks
(Batcher's odd-even merge, networks.py) written out as one program per layout (filter_program.py):
axis after axis, sorted runs of the window's values are merged, each merge shared by the
neighbouring windows that hold both runs; along the last axis only the middle rank is selected. A
selection copies a value, so the result is scipy's, bit for bit (NaN aside: scipy's own order of
NaNs is arbitrary).

`smooth` runs the program and the Gaussian on numba's compiled kernels when numba is installed
(smooth_compiled.py); this module is the path without it: the program in numpy, one array operation
per instruction, and the Gaussian scipy's own along long axes, while along axes of 1–3 positions
(kernels), where scipy sets up a line for every three values, numpy repeats its float64 steps over
all lines at once.
"""

from __future__ import annotations

import numpy as np
import torch

from lib_merge.methods.filter_layout import SHORT, lay_out, median_laid_out, restore
from lib_merge.methods.filter_program import run_with_numpy

GAUSSIAN_BLOCK = 1 << 18  # elements of one block of lines (larger blocks: fewer calls; measured best)
RADIUS = 4  # scipy's Gaussian reach: int(truncate · σ + 0.5), truncate 4, σ 1


def median_filter3(values: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.median_filter(values, size=3) (mode "reflect"), for float32 of any rank ≥ 1, in numpy:
    the median's program (filter_program.py) run one array operation per instruction."""
    x = values.detach().cpu().float().numpy()
    laid, order, short = lay_out(x)
    return torch.from_numpy(restore(median_laid_out(laid, short, np.empty_like(laid), run_with_numpy), order, x.shape))


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


def smooth(difference: torch.Tensor, compiled: bool = True, overwrite: bool = False) -> torch.Tensor:
    """gaussian_filter(median_filter(d, size=3), sigma=1), scipy's defaults, for any rank ≥ 1 (float32).

    On numba's compiled kernels when numba is installed (smooth_compiled.py), else on numpy's arrays
    here; both give scipy's values. `compiled=False` asks for the numpy arithmetic. `overwrite`: the
    difference (a CPU float32 tensor) is the caller's scratch, which saves the memory of a copy.
    """
    if not difference.numel():  # an empty tensor: nothing to filter (and no first row to size a chunk by)
        return difference.float()
    values = difference.detach().cpu().float()
    kernels = _compiled() if compiled else None
    if kernels is not None:
        own = overwrite and values.data_ptr() == difference.data_ptr() and values.is_contiguous()
        return torch.from_numpy(kernels(np.ascontiguousarray(values.numpy()), _gaussian_weights(), overwrite=own))
    return torch.from_numpy(gaussian_filter1(median_filter3(values).numpy()))


def _compiled():  # noqa: ANN202 - the function, or None without numba
    """smooth_compiled, when numba can be imported (it is optional: the numpy path gives the same values)."""
    try:
        from lib_merge.methods.smooth_compiled import smooth_compiled
    except ImportError:
        return None
    return smooth_compiled
