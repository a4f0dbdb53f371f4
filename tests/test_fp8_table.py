"""fp8 to fp8 by table (engine/fp8_table.py): the same bytes as merging element by element, and the same
refusal or clamping of results beyond the format's range."""

from __future__ import annotations

import pytest
import torch
from helpers import load
from safetensors.torch import save_file

from lib_merge.engine import fp8_table, run
from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.errors import AlloyError
from lib_merge.recipe.parse import parse_recipe

KEY = "model.diffusion_model.double_blocks.0.img_mlp.0.weight"


@pytest.fixture(scope="module")
def pair(models, tmp_path_factory):
    """Two fp8 Flux miniatures whose first MLP weight is larger than the table's threshold and holds every
    code but NaN (NaN inputs are refused anyway), in e4m3fn and e5m2."""
    folder = tmp_path_factory.mktemp("fp8table")
    out = {}
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        paths = []
        for seed in (1, 2):
            tensors = load(models(f"flux_t{seed}", arch="flux", scale=32, seed=seed, components=("diffuser",)))
            gen = torch.Generator().manual_seed(seed)
            codes = torch.randint(0, 256, (fp8_table.MIN_ELEMENTS * 2,), generator=gen, dtype=torch.int32)
            values = codes.to(torch.uint8).view(dtype).float()
            values[~torch.isfinite(values)] = 0.0
            tensors[KEY] = values.reshape(512, -1)
            tensors = {k: t.to(dtype) for k, t in tensors.items()}
            path = folder / f"{dtype}_{seed}.safetensors"
            save_file(tensors, str(path))
            paths.append(path)
        out[dtype] = paths
    return out


def merge(paths, expr: str, out, dtype: torch.dtype, clamp: bool = False):
    text = f'alloy-recipe 1\nA = model("{paths[0]}")\nB = model("{paths[1]}")\nmerged = {expr}\n'
    return merge_to_file(parse_recipe(text), SaveOptions(str(out), dtype=dtype, clamp=clamp))


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("expr", ["weighted_sum(A, B, alpha=0.3)", "add_difference(A, B, A, alpha=0.4)",
                                  "self_scale(A, alpha=0.7)"])  # fmt: skip
def test_table_gives_the_bytes_of_the_element_merge(pair, expr, dtype, tmp_path, monkeypatch):
    used = []
    real = fp8_table.by_table
    monkeypatch.setattr(run, "by_table", lambda *a, **k: used.append(1) or real(*a, **k))
    merge(pair[dtype], expr, tmp_path / "table.safetensors", dtype)
    assert used  # the big key went through the table
    monkeypatch.setattr(run, "table_leaves", lambda *a: None)
    merge(pair[dtype], expr, tmp_path / "plain.safetensors", dtype)
    table, plain = load(tmp_path / "table.safetensors"), load(tmp_path / "plain.safetensors")
    assert table.keys() == plain.keys()
    for key in plain:
        assert torch.equal(table[key].view(torch.uint8), plain[key].view(torch.uint8)), key


def test_results_beyond_the_range_are_refused_or_clamped_as_without_a_table(pair, tmp_path, monkeypatch):
    paths = pair[torch.float8_e4m3fn]
    with pytest.raises(AlloyError, match=KEY.replace(".", r"\.")):
        merge(paths, "weighted_sum(A, B, alpha=-3)", tmp_path / "x.safetensors", torch.float8_e4m3fn)
    assert list(tmp_path.iterdir()) == []
    merge(paths, "weighted_sum(A, B, alpha=-3)", tmp_path / "table.safetensors", torch.float8_e4m3fn, clamp=True)
    monkeypatch.setattr(run, "table_leaves", lambda *a: None)
    merge(paths, "weighted_sum(A, B, alpha=-3)", tmp_path / "plain.safetensors", torch.float8_e4m3fn, clamp=True)
    table, plain = load(tmp_path / "table.safetensors")[KEY], load(tmp_path / "plain.safetensors")[KEY]
    assert torch.equal(table.view(torch.uint8), plain.view(torch.uint8))
    assert int((table.float().abs() == 448).sum()) > 1000  # clamped, not wrapped
