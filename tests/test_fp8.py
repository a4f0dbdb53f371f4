"""fp8 checkpoints: read as stored (scaled ones dequantised), merged in fp32, written as fp8 on request with
the range checked (or clamped), and fp8 components the merge leaves alone kept byte for byte.

Files are written here with safetensors' own save_file; references are float64 computations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import load
from safetensors.torch import save_file
from test_lora_merge_extract import run

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import ParameterError
from lib_merge.io import open_model
from lib_merge.io.source import SourceModel

FP8 = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
BIG_KEY = "model.diffusion_model.input_blocks.1.1.proj_in.weight"


def write_as(src: Path, dst: Path, dtype_of, change=None) -> Path:
    """`src` again at `dst`: each floating tensor in `dtype_of(key)` (None: as it is), after `change(key, t)`."""
    tensors = {}
    for key, tensor in load(src).items():
        if change is not None:
            tensor = change(key, tensor)
        wanted = dtype_of(key) if tensor.is_floating_point() else None
        tensors[key] = tensor.to(wanted) if wanted is not None else tensor
    save_file(tensors, str(dst))
    return dst


def assert_rounded(out: torch.Tensor, ref: tuple[torch.Tensor, torch.Tensor], dtype: torch.dtype, key: str) -> None:
    """`out` is the float64 reference rounded to `dtype`: bit for bit, except where the merge's fp32 arithmetic
    (a few fp32 steps of the terms' size) may land on the other side of a rounding boundary."""
    value, size = ref
    assert out.dtype == dtype, key
    expected = value.to(dtype)
    same = out.view(torch.uint8) == expected.view(torch.uint8) if dtype.itemsize == 1 else out == expected
    if not bool(same.all()):
        near = (out.double() - value).abs() - (expected.double() - value).abs()
        assert bool((near[~same] <= size[~same] * 2**-21).all()), key


def merged_ref(a: dict, b: dict, key: str, alpha: float, top: float | None = None):
    """(1 - alpha)·A + alpha·B in float64 (clamped to ±top when given), and the size of its terms."""
    value = a[key].double() * (1 - alpha) + b[key].double() * alpha
    size = a[key].double().abs() * (1 - alpha) + b[key].double().abs() * alpha
    return (value if top is None else value.clamp(-top, top)), size


def no_leftovers(folder: Path, *expected: str) -> None:
    names = set(os.listdir(folder))
    assert not any(".alloy-tmp-" in n for n in names), names
    assert names >= set(expected)


@pytest.fixture(scope="module")
def fp8_files(sd1_fp32, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """A and B of SD1 with every floating tensor in each fp8 dtype."""
    folder = tmp_path_factory.mktemp("fp8")
    return {
        name: tuple(
            write_as(src, folder / f"{name}_{r}.safetensors", lambda k, d=dtype: d)
            for r, src in zip("ab", sd1_fp32[:2])
        )  # fmt: skip
        for name, dtype in FP8.items()
    }


@pytest.mark.parametrize("stored", list(FP8))
def test_fp8_files_merge_in_fp32_and_are_written_as_fp8(fp8_files, tmp_path, stored):
    a_path, b_path = fp8_files[stored]
    target = tmp_path / "ws.safetensors"
    proc = run("merge", "--a", a_path, "--b", b_path, "--alpha", "0.3", "--dtype", stored, "-o", target,
               "--no-history")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    a, b, o = load(a_path), load(b_path), load(target)
    source = SourceModel(str(a_path))
    try:  # the reader gives the stored tensors; their .float() is what is merged
        for key in list(a)[:40]:
            assert source.info(key).dtype == a[key].dtype and torch.equal(source.read(key).float(), a[key].float())
    finally:
        source.close()
    merged = [k for k in a if a[k].is_floating_point() and not k.endswith("position_ids")]
    assert len(merged) > 100
    for key in merged:
        assert_rounded(o[key], merged_ref(a, b, key, 0.3), FP8[stored], key)


@pytest.mark.parametrize("stored", list(FP8))
def test_fp8_files_merge_through_the_ram_cache(fp8_files, tmp_path, stored):
    """The WebUI's and the app's loop: the same inputs merged again, served from the RAM cache (which notes
    each tensor's peak as it comes in), into fp16 and into fp32."""
    from lib_merge.engine.options import EngineOptions
    from lib_merge.engine.to_file import SaveOptions, merge_to_file
    from lib_merge.io.cache import TensorCache
    from lib_merge.recipe.form import MergeSettings, build_recipe

    a_path, b_path = fp8_files[stored]
    engine = EngineOptions(cache=TensorCache(1 << 30))
    root = build_recipe(MergeSettings(a=str(a_path), b=str(b_path), mode="weighted_sum", alpha=0.3))
    a, b = load(a_path), load(b_path)
    for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        target = tmp_path / f"{name}.safetensors"
        merge_to_file(root, SaveOptions(str(target), dtype), engine)
        o = load(target)
        for key in [k for k in a if a[k].is_floating_point() and not k.endswith("position_ids")]:
            assert_rounded(o[key], merged_ref(a, b, key, 0.3), dtype, key)
    assert engine.cache.stats().hits > 100


@pytest.fixture(scope="module")
def big(sd1_fp32, tmp_path_factory) -> tuple[Path, Path]:
    """fp32 A whose BIG_KEY reaches ±1e5 (beyond both fp8 ranges), and fp32 B."""
    folder = tmp_path_factory.mktemp("big")
    a = write_as(sd1_fp32[0], folder / "big_a.safetensors", lambda k: None,
                 lambda k, t: t * 1e6 if k == BIG_KEY else t)  # fmt: skip
    return a, sd1_fp32[1]


@pytest.mark.parametrize("dtype", list(FP8))
def test_values_beyond_the_fp8_range_are_refused_naming_the_key_or_clamped(big, tmp_path, dtype):
    target = tmp_path / "out.safetensors"
    args = ("merge", "--a", big[0], "--b", big[1], "--alpha", "0.5", "--dtype", dtype, "-o", target, "--no-history")
    refused = run(*args)
    assert refused.returncode == 4, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and BIG_KEY in errors[0] and "--clamp" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr
    assert os.listdir(tmp_path) == []  # nothing published, no temporary file left
    clamped = run(*args, "--clamp")
    assert clamped.returncode == 0, clamped.stderr
    a, b, o = load(big[0]), load(big[1]), load(target)
    top = torch.finfo(FP8[dtype]).max
    assert merged_ref(a, b, BIG_KEY, 0.5)[0].abs().max() > top
    assert_rounded(o[BIG_KEY], merged_ref(a, b, BIG_KEY, 0.5, top), FP8[dtype], BIG_KEY)
    other = "model.diffusion_model.out.2.weight"
    assert_rounded(o[other], merged_ref(a, b, other, 0.5), FP8[dtype], other)
    no_leftovers(tmp_path, "out.safetensors")


def test_an_infinity_or_nan_is_refused_even_where_fp8_could_store_it():
    from lib_merge.errors import Fp8RangeError
    from lib_merge.io.fp8 import to_fp8

    for value in (float("inf"), float("nan")):
        with pytest.raises(Fp8RangeError, match="key k.q has 1 NaN/Inf values"):
            to_fp8(torch.tensor([1.0, value]), torch.float8_e5m2, "k.q")
    assert to_fp8(torch.tensor([1.0, -float("inf")]), torch.float8_e5m2, "k", clamp=True).float().tolist() == [
        1.0, -57344.0,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def flux_fp8_t5(models, tmp_path_factory) -> tuple[Path, Path]:
    """Flux A and B with their T5 in fp8 e4m3fn and the rest in bf16."""
    folder = tmp_path_factory.mktemp("flux_fp8")

    def dtype_of(key: str) -> torch.dtype:
        return torch.float8_e4m3fn if key.startswith("text_encoders.t5xxl.") else torch.bfloat16

    return tuple(
        write_as(models(f"flux32_{r}", arch="flux", seed=s, dtype=torch.float32), folder / f"{r}.safetensors", dtype_of)
        for r, s in (("a", 61), ("b", 62))
    )


def test_fp8_components_the_merge_leaves_alone_keep_their_bytes(flux_fp8_t5, tmp_path):
    a_path, b_path = flux_fp8_t5
    target = tmp_path / "flux.safetensors"
    proc = run("merge", "--a", a_path, "--b", b_path, "--blocks", "T5=0 *=0.5", "--dtype", "fp16", "-o", target,
               "--no-history")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    a, b, o = load(a_path), load(b_path), load(target)
    t5 = [k for k in a if k.startswith("text_encoders.t5xxl.")]
    assert len(t5) > 50
    for key in t5:
        assert o[key].dtype == torch.float8_e4m3fn and torch.equal(o[key].view(torch.uint8), a[key].view(torch.uint8))
    diffuser = [k for k in a if k.startswith("model.diffusion_model.")]
    for key in diffuser[:200]:
        assert_rounded(o[key], merged_ref(a, b, key, 0.5), torch.float16, key)


@pytest.fixture(scope="module")
def scaled(sd1_fp32, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """SD1 A as a scaled fp8 file: each 2-D weight as fp8(w / s) with its scale s, a scale_input beside some,
    and the scaled_fp8 marker. Returns the file and its stored tensors."""
    tensors: dict[str, torch.Tensor] = {}
    for key, t in load(sd1_fp32[0]).items():
        if key.endswith(".weight") and t.dim() == 2 and key.startswith("model.diffusion_model."):
            scale = (t.abs().max() / 448).reshape(())
            tensors[key] = (t / scale).to(torch.float8_e4m3fn)
            tensors[key.removesuffix(".weight") + ".scale_weight"] = scale.clone()
            tensors[key.removesuffix(".weight") + ".scale_input"] = torch.ones(1)
        else:
            tensors[key] = t
    tensors["model.diffusion_model.scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    path = tmp_path_factory.mktemp("scaled") / "scaled.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_scaled_fp8_reads_as_weight_times_scale_without_its_scale_keys(scaled, sd1_fp32, tmp_path):
    path, stored = scaled
    weights = [k for k in stored if k.removesuffix(".weight") + ".scale_weight" in stored]
    assert len(weights) > 20
    opened = open_model(str(path))
    try:
        hidden = [k for k in stored if k.endswith((".scale_weight", ".scale_input", "scaled_fp8"))]
        assert set(opened.keys()) == set(stored) - set(hidden)
        for key in weights:
            value = stored[key].float() * stored[key.removesuffix(".weight") + ".scale_weight"]
            assert opened.tensors[key].dtype == torch.float32
            assert torch.equal(opened.read(key), value) and torch.equal(opened.view(key), value), key
            opened.release(key)
    finally:
        opened.close()
    # The OUT blocks stay A: their scaled weights are written dequantised in the output dtype.
    target = tmp_path / "from_scaled.safetensors"
    proc = run("merge", "--a", path, "--b", sd1_fp32[1], "--blocks", "OUT00-OUT11=0 *=0.25", "--dtype", "fp16",
               "-o", target, "--no-history")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    o, b = load(target), load(sd1_fp32[1])
    assert not [k for k in o if k.endswith((".scale_weight", ".scale_input", "scaled_fp8"))]
    a = {k: stored[k].double() * stored[k.removesuffix(".weight") + ".scale_weight"].double() for k in weights}
    kept = [k for k in weights if (SCHEMAS["sd1"].slot_of(k) or "").startswith("OUT")]
    assert 5 < len(kept) < len(weights) - 5
    for key in weights:
        assert_rounded(o[key], merged_ref(a, b, key, 0.0 if key in kept else 0.25), torch.float16, key)


def test_a_recipe_cast_and_convert_write_fp8(sd1_fp32, tmp_path):
    recipe = tmp_path / "r.alloy"
    recipe.write_text(f'alloy-recipe 1\nA = model("{sd1_fp32[0]}")\nB = model("{sd1_fp32[1]}")\n'
                      'merged = cast(weighted_sum(A, B, alpha=0.5), dtype="fp8_e5m2")\n')  # fmt: skip
    proc = run("merge", recipe, "-o", tmp_path / "cast.safetensors", "--no-history")
    assert proc.returncode == 0, proc.stderr
    a, b, o = load(sd1_fp32[0]), load(sd1_fp32[1]), load(tmp_path / "cast.safetensors")
    key = "model.diffusion_model.out.2.weight"
    assert_rounded(o[key], merged_ref(a, b, key, 0.5), torch.float8_e5m2, key)
    converted = tmp_path / "conv.safetensors"
    proc = run("convert", sd1_fp32[0], "--dtype", "fp8_e4m3fn", "-o", converted)
    assert proc.returncode == 0, proc.stderr
    c = load(converted)
    for key, t in a.items():
        if t.is_floating_point() and not key.endswith("position_ids"):
            assert c[key].dtype == torch.float8_e4m3fn and torch.equal(
                c[key].view(torch.uint8), t.to(torch.float8_e4m3fn).view(torch.uint8)
            ), key


def test_fp8_is_no_lora_dtype_nor_a_compute_dtype():
    from lib_merge.app.lora import parse_lora_dtype
    from lib_merge.io.dtypes import parse_compute_dtype, parse_output_dtype

    assert parse_output_dtype("fp8_e4m3fn") is torch.float8_e4m3fn
    for refuse, name in ((parse_lora_dtype, "fp8_e5m2"), (parse_compute_dtype, "fp8_e4m3fn")):
        with pytest.raises(ParameterError, match=name) as caught:
            refuse(name)
        assert "\n" not in str(caught.value)


def test_the_merge_tabs_save_form_offers_fp8_and_its_clamp_box():
    from lib_merge.ui.values import MERGE_FIELDS, SAVE_DTYPES, save_request

    assert {"fp8_e4m3fn", "fp8_e5m2"} <= set(SAVE_DTYPES) and "save_clamp" in MERGE_FIELDS
    request = save_request({"save_dtype": "fp8_e5m2", "save_clamp": True})
    assert (request.dtype, request.clamp) == ("fp8_e5m2", True)
    assert save_request({"save_dtype": "fp16"}).clamp is False
