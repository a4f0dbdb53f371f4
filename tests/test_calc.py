"""SuperMerger's calc modes, each against a float64 reference written here from
the written formula, on miniature SD1 and SDXL checkpoints."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter, median_filter
from test_merge import component_keys, merge, recipe

from lib_merge.engine.options import EngineOptions
from lib_merge.errors import InvalidComboError, ParameterError
from lib_merge.methods import calc
from lib_merge.recipe.form import MergeSettings, build_recipe, method_for

KEYS = (
    "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",  # conv 4-D
    "model.diffusion_model.out.2.bias",  # 1-D
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",  # linear 2-D
    "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
)


def f64(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def ref_train_difference(a, b, c, alpha):
    if np.array_equal(b, c):
        return a
    denom = np.abs(b - c) + np.abs(b - a)
    w = np.divide(np.abs(b - a), denom, out=np.zeros_like(a), where=denom != 0)
    return a + (b - c) * w * (alpha * 1.8)


def ref_smooth_add(a, b, c, alpha):
    d = (b - c).astype(np.float32)
    return a + alpha * gaussian_filter(median_filter(d, size=3), sigma=1).astype(np.float64)


def ref_extract(a, b, c, alpha, beta, gamma):
    p, q = b - a, c - a
    dot = (p * q).sum(-1, keepdims=True)
    norms = np.maximum(np.linalg.norm(p, axis=-1, keepdims=True) * np.linalg.norm(q, axis=-1, keepdims=True), 1e-8)
    cs = np.clip(dot / norms, -1, 1)
    d = ((cs + 1) / 2) ** gamma
    return a + (p + alpha * (q - p)) * (d + beta * ((1 - d) - d))


def ref_tensor(a, b, alpha, beta, axis):
    axis = axis if a.ndim > 1 else 0
    n = a.shape[axis]
    out, src = (a.copy(), b) if alpha + beta <= 1 else (b.copy(), a)
    al, be = Fraction(str(alpha)), Fraction(str(beta))  # exact: ⌊N·(α+β−1)⌋ without rounding error
    lo, hi = (int(n * be), int(n * (al + be))) if al + be <= 1 else (int(n * (al + be - 1)), int(n * be))
    idx = [slice(None)] * a.ndim
    idx[axis] = slice(lo, hi)
    out[tuple(idx)] = src[tuple(idx)]
    return out


CASES = {
    "trainDifference": ({"alpha": 0.7}, lambda a, b, c: ref_train_difference(a, b, c, 0.7)),
    "smoothAdd": ({"alpha": 0.6}, lambda a, b, c: ref_smooth_add(a, b, c, 0.6)),
    "extract": ({"alpha": 0.3, "beta": 0.4, "gamma": 2.0}, lambda a, b, c: ref_extract(a, b, c, 0.3, 0.4, 2.0)),
    "tensor": ({"alpha": 0.3, "beta": 0.2}, lambda a, b, c: ref_tensor(a, b, 0.3, 0.2, 0)),
    "tensor2": ({"alpha": 0.6, "beta": 0.7}, lambda a, b, c: ref_tensor(a, b, 0.6, 0.7, 1)),
}


@pytest.mark.parametrize("calc_mode", sorted(CASES))
def test_calc_modes_match_the_float64_reference(calc_mode, sd1_fp32, tmp_path):
    params, reference = CASES[calc_mode]
    mode = "add_difference" if calc_mode in ("trainDifference", "smoothAdd", "extract") else "weighted_sum"
    settings = MergeSettings(
        str(sd1_fp32[0]), str(sd1_fp32[1]), mode, str(sd1_fp32[2]) if mode == "add_difference" else None,
        params["alpha"], params.get("beta"), calc=calc_mode, gamma=params.get("gamma"),
    )  # fmt: skip
    from lib_merge.engine.to_file import SaveOptions, merge_to_file

    result = merge_to_file(build_recipe(settings), SaveOptions(str(tmp_path / "m.safetensors"), torch.float32))
    out, a, b, c = (load(p) for p in (result.path, *sd1_fp32))
    for key in KEYS:
        expected = reference(f64(a[key]), f64(b[key]), f64(c[key]))
        np.testing.assert_allclose(f64(out[key]), expected, rtol=2e-5, atol=2e-6, err_msg=f"{calc_mode} {key}")
    vae = "first_stage_model.decoder.conv_out.weight"
    assert not torch.equal(out[vae], a[vae])  # the VAE follows BASE in these modes


def test_spec_numeric_checks():
    one = torch.tensor([1.0])
    assert float(calc.train_difference(one.clone(), one * 3, one * 2, alpha=0.5)) == pytest.approx(1.6)
    same = calc.train_difference(one.clone(), one * 3, one * 3, alpha=0.5)
    assert float(same) == 1.0
    out = calc.extract(torch.zeros(2), torch.tensor([1.0, 0]), torch.tensor([0, 1.0]), alpha=0.5, beta=0, gamma=1)
    assert out.tolist() == pytest.approx([0.25, 0.25])
    a, b = torch.zeros(10), torch.ones(10)
    assert calc.tensor_swap(a.clone(), b.clone(), alpha=0.3, beta=0.2, axis=0).nonzero().flatten().tolist() == [2, 3, 4]
    swapped = calc.tensor_swap(a.clone(), b.clone(), alpha=0.6, beta=0.7, axis=0)
    assert (swapped == 0).nonzero().flatten().tolist() == [3, 4, 5, 6]
    base = torch.randn(4, 5, 3, 3)
    smooth = calc.smooth_add(base.clone(), torch.full_like(base, 0.9), torch.full_like(base, 0.5), alpha=0.5)
    torch.testing.assert_close(smooth, base + 0.2)


def cos_dim0(x, y):
    return (x * y).sum(0) / np.maximum(np.linalg.norm(x, axis=0) * np.linalg.norm(y, axis=0), 1e-8)


def flat_cos(x, y):
    return float((x * y).sum() / (np.linalg.norm(x) * np.linalg.norm(y)))


def unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-12)


def ref_range(values: np.ndarray) -> tuple[float, float]:
    """docs/FORMULAS.md §2: drop what lies below P1, then what lies above P99 of the rest (SuperMerger's order)."""
    values = values[values >= np.percentile(values, 1, method="midpoint")]
    values = values[values <= np.percentile(values, 99, method="midpoint")]
    return values.min(), values.max()


def ref_cosine_sim(calc_mode: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(what the pre-pass collects, the main pass's similarity) of one key."""
    if calc_mode == "cosineA":
        x, y = unit_rows(x), unit_rows(y)
        return cos_dim0(x, y), (cos_dim0(x, y) + flat_cos(x, y)) / 2
    sim = (cos_dim0(x, y) + flat_cos(x, y)) / 2
    return sim, sim


def zeroed(path, keys, folder) -> Path:
    """A copy of the checkpoint at `path` with `keys` all zero (biases initialised to zero)."""
    state = load(path)
    for key in keys:
        state[key] = torch.zeros_like(state[key])
    out = folder / f"zeroed_{Path(path).stem}.safetensors"
    save_file(state, str(out))
    return out


ZERO_IN_A = ("model.diffusion_model.out.2.bias", "model.diffusion_model.input_blocks.1.0.in_layers.2.bias")
ZERO_IN_B = ("cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.bias",)


@pytest.mark.parametrize("calc_mode", ["cosineA", "cosineB"])
def test_cosine_modes_with_their_prepass(calc_mode, sd1_fp32, tmp_path):
    """Reference from docs/FORMULAS.md §2 (cosine modes), on models with all-zero biases in A and in B:
    those keys keep A and take no part in the range; every other key follows the formula with SuperMerger's range."""
    alpha = 0.2
    paths = zeroed(sd1_fp32[0], ZERO_IN_A, tmp_path), zeroed(sd1_fp32[1], ZERO_IN_B, tmp_path)
    settings = MergeSettings(str(paths[0]), str(paths[1]), "weighted_sum", alpha=alpha, calc=calc_mode)
    from lib_merge.engine.to_file import SaveOptions, merge_to_file
    from lib_merge.io.cache import TensorCache

    cache = TensorCache(1 << 30)
    result = merge_to_file(
        build_recipe(settings), SaveOptions(str(tmp_path / "m.safetensors"), torch.float32), EngineOptions(cache=cache)
    )
    out, a, b = (load(p) for p in (result.path, *paths))
    keys = [k for k in component_keys("sd1", a) if not k.startswith("first_stage_model.") and a[k].dim() > 0]
    zero = set(ZERO_IN_A + ZERO_IN_B)
    collected = [ref_cosine_sim(calc_mode, f64(a[k]), f64(b[k]))[0] for k in keys if k not in zero]
    values = np.concatenate([np.ravel(s) for s in collected])
    s_min, s_max = ref_range(values)
    ((range_, _),) = cache.memo.values()
    assert range_["s_min"] == pytest.approx(s_min, rel=1e-6) and range_["s_max"] == pytest.approx(s_max, rel=1e-6)
    p99_of_all = np.percentile(values, 99, method="midpoint")  # both cuts on one array: another s_max
    assert abs(values[values <= p99_of_all].max() - s_max) > 1e-4 * abs(s_max)
    for key in (*KEYS, *ZERO_IN_B):
        x, y = f64(a[key]), f64(b[key])
        if key in zero:
            assert torch.equal(out[key], a[key]), key  # no cosine for a zero norm: A stays, never NaN
            continue
        k = np.clip((ref_cosine_sim(calc_mode, x, y)[1] - s_min) / (s_max - s_min) - alpha, 0, 1)
        np.testing.assert_allclose(f64(out[key]), (1 - k) * y + k * x, rtol=1e-4, atol=1e-5, err_msg=key)
    for key in ZERO_IN_A:
        assert torch.equal(out[key], a[key]), key
    vae = "first_stage_model.decoder.conv_out.weight"
    assert torch.equal(out[vae], a[vae])  # VAE keeps A in the cosine modes


def test_cosine_prepass_is_remembered_in_the_cache(sd1_fp32, tmp_path):
    from lib_merge.io.cache import TensorCache

    cache = TensorCache(1 << 30)
    engine = EngineOptions(cache=cache)
    first = merge(recipe("cosine_b", sd1_fp32[:2], alpha=0.1), tmp_path / "1.safetensors", torch.float32, engine=engine)
    assert len(cache.memo) == 1
    ((range_, prepared),) = cache.memo.values()
    assert range_["s_min"] < range_["s_max"]
    assert len(prepared) > 800  # each key's similarity, not computed again in the main pass
    second = merge(recipe("cosine_b", sd1_fp32[:2], alpha=0.1), tmp_path / "2.safetensors", torch.float32,
                   engine=EngineOptions(cache=cache))  # fmt: skip
    again = load(second.path)
    assert all(torch.equal(t, again[k]) for k, t in load(first.path).items())


def test_self_and_plus_random(sd1_fp32, tmp_path):
    out = load(merge(recipe("self_scale", sd1_fp32[:1], alpha=0.5), tmp_path / "s.safetensors", torch.float32).path)
    a = load(sd1_fp32[0])
    for key in component_keys("sd1", a):
        if any(w in key for w in ("to_out", "proj_out", "norm")):
            assert torch.equal(out[key], a[key]), key
        else:
            torch.testing.assert_close(out[key], a[key] * 0.5, rtol=0, atol=0)
    text = recipe("plus_random", sd1_fp32[:1], alpha=0.1, seed=42)
    one = load(merge(text, tmp_path / "r1.safetensors", torch.float32, engine=EngineOptions(threads=1)).path)
    four = load(merge(text, tmp_path / "r4.safetensors", torch.float32, engine=EngineOptions(threads=4)).path)
    key = KEYS[0]
    digest = hashlib.sha256(f"42:randn:{key}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    expected = a[key] + 0.1 * torch.randn(a[key].shape, generator=gen)
    torch.testing.assert_close(one[key], expected, rtol=0, atol=1e-7)
    assert all(torch.equal(one[k], four[k]) for k in one)  # the same bytes on any thread count
    other = load(merge(recipe("plus_random", sd1_fp32[:1], alpha=0.1, seed=43), tmp_path / "r5.safetensors",
                       torch.float32).path)  # fmt: skip
    assert not torch.equal(other[key], one[key])


def test_calc_modes_on_sdxl(sdxl, tmp_path):
    text = recipe("train_difference", sdxl, alpha=0.5)
    out, a, b, c = (load(p) for p in (merge(text, tmp_path / "x.safetensors", torch.float32).path, *sdxl))
    key = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    expected = ref_train_difference(f64(a[key]), f64(b[key]), f64(c[key]), 0.5)
    np.testing.assert_allclose(f64(out[key]), expected, rtol=1e-2, atol=2e-3)  # fp16 inputs, fp32 output


@pytest.mark.parametrize(
    "mode, calc_mode, error, words",
    [
        ("add_difference", "tensor", InvalidComboError, "tensor needs mode Weight sum"),
        ("weighted_sum", "trainDifference", InvalidComboError, "needs mode Add difference and a model C"),
        ("triple_sum", "extract", InvalidComboError, "valid with Triple sum: normal"),
        ("add_difference", "cosineA", InvalidComboError, "cosineA needs mode Weight sum"),
        ("weighted_sum", "magic", InvalidComboError, "unknown calc mode 'magic'"),
    ],
)
def test_invalid_combinations_say_what_is_valid(mode, calc_mode, error, words):
    with pytest.raises(error, match=words):
        method_for(mode, calc_mode)


def test_out_of_range_parameters_are_refused_before_reading(sd1_fp32, tmp_path):
    text = recipe("extract", sd1_fp32, alpha=1.5, beta=0.2, gamma=0.3)
    with pytest.raises(ParameterError, match=r"extract\(\): alpha must lie in \[0.0, 1.0\], not 1.5"):
        merge(text, tmp_path / "e.safetensors")
    text = recipe("extract", sd1_fp32, alpha='blocks("*=0.5 OUT03=-0.1")', beta=0.2, gamma=0.3)
    with pytest.raises(ParameterError, match="not -0.1"):
        merge(text, tmp_path / "e.safetensors")
    assert not list(tmp_path.iterdir())


def test_cli_calc_flags(sd1_fp32, tmp_path):
    from test_cli import cli

    out = tmp_path / "cli.safetensors"
    proc = cli("merge", "--a", sd1_fp32[0], "--b", sd1_fp32[1], "--c", sd1_fp32[2], "--mode", "add", "--calc",
               "extract", "--alpha", "0.3", "--beta", "0.4", "--gamma", "2", "--dtype", "fp32", "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    a, b, c = (load(p) for p in sd1_fp32)
    key = KEYS[2]
    np.testing.assert_allclose(f64(load(out)[key]), ref_extract(f64(a[key]), f64(b[key]), f64(c[key]), 0.3, 0.4, 2.0),
                               rtol=2e-5, atol=2e-6)  # fmt: skip
    printed = cli("merge", "--a", sd1_fp32[0], "--mode", "ws", "--calc", "random", "--seed", "7", "--print-recipe")
    assert "merged = plus_random(A, alpha=0.5, seed=7)" in printed.stdout
    bad = cli("merge", "--a", sd1_fp32[0], "--b", sd1_fp32[1], "--mode", "ws", "--calc", "extract", "-o", out)
    assert bad.returncode == 3 and "extract needs mode Add difference" in bad.stderr


@pytest.mark.parametrize("shape", [(320, 320, 3, 3), (1280, 320), (640,)])
def test_cosine_a_similarities_through_one_scratch_tensor_are_the_plain_formulas_bits(shape):
    """The pre-pass writes every product into one scratch tensor: it must give the bits of the
    plain formulas (normalize the columns, then dot and squares), written out here."""
    from lib_merge.methods.cosine import _sim_a

    generator = torch.Generator().manual_seed(len(shape))
    a = torch.randn(shape, generator=generator) * 0.02
    b = a + torch.randn(shape, generator=generator) * 0.01
    a2, b2 = a.reshape(shape[0], -1), b.reshape(shape[0], -1)
    unit_a = a2 / (a2 * a2).sum(0).sqrt().clamp_min(1e-12)
    unit_b = b2 / (b2 * b2).sum(0).sqrt().clamp_min(1e-12)
    dot, sq_a, sq_b = (unit_a * unit_b).sum(0), (unit_a * unit_a).sum(0), (unit_b * unit_b).sum(0)
    per_column = dot / (sq_a * sq_b).sqrt().clamp_min(1e-8)
    flat = dot.sum() / (sq_a.sum() * sq_b.sum()).sqrt()
    got_columns, got_mix = _sim_a(a, b)
    assert torch.equal(got_columns, per_column.reshape(shape[1:]))
    assert torch.equal(got_mix, (per_column.reshape(shape[1:]) + flat) / 2)
