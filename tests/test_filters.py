"""smoothAdd's median filter on min/max networks gives scipy's values exactly, at every rank and edge."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, median_filter

from lib_merge.methods import calc, filter_layout, filters, networks

SHAPES = [
    (1,), (2,), (3,), (4,), (11,),  # biases and norms
    (2, 2), (3, 3), (1, 7), (7, 1), (5, 4), (17, 9), (64, 40),  # linear layers, embeddings
    (1, 6, 5), (4, 3, 2), (6, 1, 3),  # position embeddings (1, tokens, width)
    (4, 3, 3, 3), (9, 8, 3, 3), (5, 2, 3, 3), (6, 7, 1, 1), (2, 2, 2, 2), (3, 1, 3, 1), (8, 5, 2, 2),  # convolutions
]  # fmt: skip


def _values(shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "ties":  # few distinct values: every window has repeats
        return np.round(x * 2).astype(np.float32)
    if kind == "difference":  # b − c of fp16 weights, as smoothAdd filters them
        b = (rng.standard_normal(shape) * 0.02).astype(np.float16).astype(np.float32)
        return b - (b + (rng.standard_normal(shape) * 0.001).astype(np.float16)).astype(np.float32)
    return x


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["normal", "ties", "difference"])
def test_median_equals_scipy(shape, kind):
    rng = np.random.default_rng(abs(hash((shape, kind))) % 2**32)
    x = _values(shape, kind, rng)
    got = filters.median_filter3(torch.from_numpy(x))
    assert got.shape == shape and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), median_filter(x, size=3))


def test_median_across_blocks_and_their_halos(monkeypatch):
    """Blocks of one row: every block edge is a halo; the result is the one-block result."""
    x = np.random.default_rng(5).standard_normal((7, 6, 3, 3)).astype(np.float32)
    monkeypatch.setattr(filter_layout, "BLOCK_ELEMENTS", 1)
    np.testing.assert_array_equal(filters.median_filter3(torch.from_numpy(x)).numpy(), median_filter(x, size=3))


def test_median_of_a_full_size_convolution_slice():
    x = np.random.default_rng(2).standard_normal((40, 320, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(filters.median_filter3(torch.from_numpy(x)).numpy(), median_filter(x, size=3))


@pytest.mark.parametrize("m, n", [(1, 1), (2, 1), (3, 3), (6, 3), (9, 9), (18, 9), (5, 8)])
def test_merge_network_sorts_every_pair_of_sorted_runs(m, n):
    """The 0-1 principle: a network that merges every pair of sorted 0/1 runs merges every pair of runs."""
    comparators, order = networks.merge_network(m, n)
    for zeros_a, zeros_b in itertools.product(range(m + 1), range(n + 1)):
        slots = [0] * zeros_a + [1] * (m - zeros_a) + [0] * zeros_b + [1] * (n - zeros_b)
        for i, j, _, _ in comparators:
            slots[i], slots[j] = min(slots[i], slots[j]), max(slots[i], slots[j])
        assert [slots[k] for k in order] == sorted(slots)


def test_pruned_network_computes_fewer_comparisons_and_the_same_ranks():
    full, _ = networks.merge_network(27, 27)
    band = networks.band(27)
    pruned, order = networks.merge_network(27, 27, band)
    assert sum(a + b for *_, a, b in pruned) < 2 * len(full)
    rng = np.random.default_rng(0)
    slots = list(np.sort(rng.standard_normal((27, 50)), 0)) + list(np.sort(rng.standard_normal((27, 50)), 0))
    expected = np.sort(np.stack(slots), 0)[list(band)]
    for i, j, keep_min, keep_max in pruned:
        low, high = np.minimum(slots[i], slots[j]), np.maximum(slots[i], slots[j])
        slots[i], slots[j] = (low if keep_min else None), (high if keep_max else None)
    np.testing.assert_array_equal(np.stack([slots[k] for k in order]), expected)


def test_smooth_add_is_supermergers_formula():
    """a + α · gaussian_filter(median_filter(b − c, size=3), sigma=1), computed here with scipy alone."""
    rng = np.random.default_rng(3)
    a, b, c = (torch.from_numpy(rng.standard_normal((6, 5, 3, 3)).astype(np.float32)) for _ in range(3))
    filtered = gaussian_filter(median_filter((b - c).numpy(), size=3), sigma=1)
    np.testing.assert_array_equal(filters.smooth(b - c).numpy(), filtered)
    got = calc.smooth_add(a.clone(), b.clone(), c.clone(), alpha=0.7)
    torch.testing.assert_close(got, a + 0.7 * torch.from_numpy(filtered), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gaussian_equals_scipy_bit_for_bit(shape, monkeypatch):
    """scipy's own along long axes, numpy's repetition of its float64 steps along short ones (blocks of a row)."""
    monkeypatch.setattr(filters, "GAUSSIAN_BLOCK", 1)
    x = np.random.default_rng(len(shape) * 31 + sum(shape)).standard_normal(shape).astype(np.float32)
    got = filters.gaussian_filter1(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), gaussian_filter(x, sigma=1).view(np.uint32))


def test_smooth_of_an_empty_tensor_is_empty():
    for shape in [(0,), (0, 4), (3, 0, 3, 3)]:
        x = np.zeros(shape, dtype=np.float32)
        got = filters.smooth(torch.from_numpy(x))
        assert got.shape == shape
        np.testing.assert_array_equal(got.numpy(), gaussian_filter(median_filter(x, size=3), sigma=1))


COMPILED_SHAPES = SHAPES + [
    (5,), (8,), (9,), (10,), (1, 1, 1, 1),  # lines around the Gaussian's reach (9 taps)
    (3, 128, 3, 3), (128, 3, 3, 3), (2, 3, 2), (5, 6, 7), (4, 5, 6, 3),  # VAE convolutions, three long axes
]  # fmt: skip


@pytest.mark.parametrize("shape", COMPILED_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["normal", "ties", "difference"])
def test_compiled_smooth_equals_scipy_and_the_numpy_path(shape, kind):
    """numba's kernels (smooth_compiled.py) give scipy's bits, as the numpy arithmetic does."""
    rng = np.random.default_rng(abs(hash((shape, kind, "compiled"))) % 2**32)
    x = _values(shape, kind, rng)
    kept = x.copy()
    expected = gaussian_filter(median_filter(x, size=3), sigma=1)
    got = filters.smooth(torch.from_numpy(x))
    assert got.shape == shape and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy().view(np.uint32), expected.view(np.uint32))
    np.testing.assert_array_equal(filters.smooth(torch.from_numpy(x), compiled=False).numpy(), expected)
    np.testing.assert_array_equal(x, kept)  # the caller's values are not written
    scratch = filters.smooth(torch.from_numpy(x.copy()), overwrite=True)  # its memory may hold the result
    np.testing.assert_array_equal(scratch.numpy().view(np.uint32), expected.view(np.uint32))


def test_compiled_path_is_taken_when_numba_is_installed():
    from lib_merge.methods import smooth_compiled

    assert filters._compiled() is smooth_compiled.smooth_compiled


def test_compiled_median_across_one_row_blocks(monkeypatch):
    """Blocks of one row of the first long axis: every block edge is a halo row; same result."""
    monkeypatch.setattr(filter_layout, "BLOCK_ELEMENTS", 1)
    for shape in [(7, 6, 3, 3), (9, 11), (13,), (5, 4, 6)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        expected = gaussian_filter(median_filter(x, size=3), sigma=1)
        np.testing.assert_array_equal(filters.smooth(torch.from_numpy(x)).numpy(), expected)


def test_median_program_reads_each_window_and_selects_its_middle():
    """The program on 0/1 values (the 0-1 principle for selection networks): for every window content
    of a 3x3-kernel layout, the output is 1 exactly when most of the window's 81 values are 1."""
    from lib_merge.methods import filter_kernels, filter_program

    program = filter_program.median_program(2, (3, 3))
    rng = np.random.default_rng(4)
    plane = (6, 7)
    x = (rng.random((200, 9, *plane)) < rng.random((200, 1, 1, 1))).astype(np.float32)  # densities 0..1
    for sample in x:
        padded = np.pad(sample, [(0, 0), (1, 1), (1, 1)], mode="edge")
        strides = filter_program.plane_strides(padded.shape[1:])
        flat = np.ascontiguousarray(padded.reshape(9, -1))
        result = np.zeros_like(flat)
        reach = sum(strides)
        filter_kernels.run_program(flat, program.inputs(strides), program.program, program.outputs, result, reach,
                                   flat.shape[1] - reach, program.slots)  # fmt: skip
        got = result.reshape(padded.shape)[:, 1:-1, 1:-1]
        np.testing.assert_array_equal(got.reshape(3, 3, *plane), median_filter(sample.reshape(3, 3, *plane), size=3))
