"""Every method on Flux, Chroma and SD3.5: it merges (every key of A, its shape, finite, the VAE kept from A
unless set, the diffuser changed), or it is refused with its reason before a single tensor is read."""

from __future__ import annotations

import pytest
import torch
from helpers import load

from lib_merge.arch.registry import ARCHITECTURES
from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.errors import AlloyError
from lib_merge.io.source import SourceModel
from lib_merge.methods import METHODS
from lib_merge.recipe.parse import parse_recipe

CALLS = {
    "weighted_sum": "weighted_sum(A, B)",
    "add_difference": "add_difference(A, B, C)",
    "triple_sum": "triple_sum(A, B, C)",
    "sum_twice": "sum_twice(A, B, C)",
    "train_difference": "train_difference(A, B, C)",
    "smooth_add": "smooth_add(A, B, C)",
    "extract": "extract(A, B, C)",
    "tensor_swap": "tensor_swap(A, B)",
    "self_scale": "self_scale(A, alpha=0.3)",
    "plus_random": "plus_random(A)",
    "cosine_a": "cosine_a(A, B)",
    "cosine_b": "cosine_b(A, B)",
    "ties": "ties(A, B, C)",
    "dare": "dare(A, B, C)",
    "dare_ties": "dare_ties(A, B, C)",
    "della": "della(A, B, C)",
    "slerp": "slerp(A, B)",
    "geometric_median": "geometric_median(A, B, C)",
    "model_stock": "model_stock(A, B, C)",
    "add_perpendicular": "add_perpendicular(A, B, C)",
    "clip": "clip(weighted_sum(A, B, alpha=0.7), A, C)",
    "n_average": "n_average(A, B, C)",
    "task_arithmetic": "task_arithmetic(A, B, C)",
    "adjust": 'adjust(A, "0.1,0,0,0,0,0,0,0")',
    "cast": 'cast(weighted_sum(A, B), dtype="fp32")',
    "lora": None,  # LoRA files per architecture: test_lora_flux.py, test_lora_sd3.py
    "rebasin": "weighted_sum(A, rebasin(B, ref=A))",
}
REFUSED = {"adjust": "SD1/SD2/SDXL only", "rebasin": "supports SD1, SD2 and SDXL"}
FAMILIES = ("flux", "chroma", "sd35_large")


def test_every_method_is_listed():
    assert set(CALLS) == set(METHODS)


@pytest.fixture(scope="module")
def trios(models):
    return {
        arch: [models(f"{arch}_m{i}", arch=arch, scale=64, seed=90 + i, dtype=torch.float32) for i in range(3)]
        for arch in FAMILIES
    }


@pytest.mark.parametrize("arch", sorted(FAMILIES))
@pytest.mark.parametrize("method", sorted(m for m, call in CALLS.items() if call))
def test_method_merges_or_is_refused_before_reading(method, arch, trios, tmp_path, monkeypatch):
    paths = trios[arch]
    text = "alloy-recipe 1\n" + "".join(f'{r} = model("{p}")\n' for r, p in zip("ABC", paths))
    text += f"merged = {CALLS[method]}\n"
    reads = []
    for name in ("read", "view"):
        original = getattr(SourceModel, name)
        monkeypatch.setattr(SourceModel, name, lambda self, key, _o=original: reads.append(key) or _o(self, key))
    out = tmp_path / "out.safetensors"
    if method in REFUSED:
        with pytest.raises(AlloyError, match=REFUSED[method]):
            merge_to_file(parse_recipe(text), SaveOptions(str(out), dtype=torch.float32))
        assert reads == [] and list(tmp_path.iterdir()) == []
        return
    merge_to_file(parse_recipe(text), SaveOptions(str(out), dtype=torch.float32))
    a, got = load(paths[0]), load(out)
    components = ARCHITECTURES[arch].component_of
    assert set(got) == {k for k in a if components(k)}  # pruned: the schedule's sigmas beside SD3's components
    changed = 0
    for key, t in a.items():
        if key not in got:
            continue
        assert got[key].shape == t.shape, key
        if t.is_floating_point():
            assert torch.isfinite(got[key]).all(), key
        if key.startswith(("vae.", "first_stage_model.")):
            assert torch.equal(got[key], t), key
        elif key.startswith("model.diffusion_model.") and not torch.equal(got[key], t):
            changed += 1
    assert changed > 0.75 * sum(1 for k in a if k.startswith("model.diffusion_model."))
