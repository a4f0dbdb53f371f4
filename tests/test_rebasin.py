"""Re-basin: the groups are exact symmetries, matching recovers known permutations, the recipe node,
the cache, the command line and the forms."""

from __future__ import annotations

import itertools
import math
import os

import pytest
import torch
import torch.nn.functional as F
from helpers import load
from safetensors.torch import save_file

from lib_merge.errors import SelfCheckError
from lib_merge.io.source import SourceModel
from lib_merge.io.synth import SynthSpec, write_synthetic
from lib_merge.rebasin import matching
from lib_merge.rebasin.groups import Group, Slice, permutation_groups
from lib_merge.rebasin.matching import MatchSettings, match_models, solve
from lib_merge.rebasin.selfcheck import block_checks, check_blocks
from lib_merge.surfaces.cli import main

UNET = "model.diffusion_model."
SD1_BLOCK = UNET + "input_blocks.1.1.transformer_blocks.0"
SDXL_BLOCK = UNET + "input_blocks.4.1.transformer_blocks.0"
CLIP_L = "cond_stage_model.transformer.text_model.encoder.layers.0"
SDXL_CLIP_L = "conditioner.embedders.0.transformer.text_model.encoder.layers.0"
SDXL_CLIP_G = "conditioner.embedders.1.model.transformer.resblocks.0"


def run(*args) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def fp32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# -- reference forward passes, written here with plain torch ops and torch modules ---------------


def attention(q, k, v, heads: int, causal: bool = False):
    b, n, _ = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    mask = torch.full((n, n), float("-inf")).triu(1) if causal else None
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2).reshape(b, n, -1)


def unet_block(w, p: str, x, context, heads: int):
    """attn1 (self), attn2 (cross) and the GEGLU feed-forward of a transformer block, without the norms."""
    outs = []
    for attn, ctx in (("attn1", x), ("attn2", context)):
        a = f"{p}.{attn}."
        y = attention(x @ w[a + "to_q.weight"].T, ctx @ w[a + "to_k.weight"].T, ctx @ w[a + "to_v.weight"].T, heads)
        outs.append(F.linear(y, w[a + "to_out.0.weight"], w[a + "to_out.0.bias"]))
    h, gate = F.linear(x, w[p + ".ff.net.0.proj.weight"], w[p + ".ff.net.0.proj.bias"]).chunk(2, dim=-1)
    outs.append(F.linear(h * F.gelu(gate), w[p + ".ff.net.2.weight"], w[p + ".ff.net.2.bias"]))
    return outs


def time_mlp(w, p: str, t):
    return F.linear(F.silu(F.linear(t, w[p + ".0.weight"], w[p + ".0.bias"])), w[p + ".2.weight"], w[p + ".2.bias"])


def clip_l_layer(w, p: str, x, heads: int = 12):
    a = p + ".self_attn."
    h = F.layer_norm(x, x.shape[-1:], w[p + ".layer_norm1.weight"], w[p + ".layer_norm1.bias"])
    q, k, v = (F.linear(h, w[a + f"{n}_proj.weight"], w[a + f"{n}_proj.bias"]) for n in "qkv")
    x = x + F.linear(attention(q, k, v, heads, causal=True), w[a + "out_proj.weight"], w[a + "out_proj.bias"])
    h = F.layer_norm(x, x.shape[-1:], w[p + ".layer_norm2.weight"], w[p + ".layer_norm2.bias"])
    h = F.linear(h, w[p + ".mlp.fc1.weight"], w[p + ".mlp.fc1.bias"])
    return x + F.linear(h * torch.sigmoid(1.702 * h), w[p + ".mlp.fc2.weight"], w[p + ".mlp.fc2.bias"])


def open_clip_layer(w, p: str, x, heads: int):
    """OpenCLIP's residual block, its attention as a real torch.nn.MultiheadAttention."""
    width = x.shape[-1]
    mha = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(w[p + ".attn.in_proj_weight"])
        mha.in_proj_bias.copy_(w[p + ".attn.in_proj_bias"])
        mha.out_proj.weight.copy_(w[p + ".attn.out_proj.weight"])
        mha.out_proj.bias.copy_(w[p + ".attn.out_proj.bias"])
        h = F.layer_norm(x, (width,), w[p + ".ln_1.weight"], w[p + ".ln_1.bias"])
        mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1)
        x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = F.layer_norm(x, (width,), w[p + ".ln_2.weight"], w[p + ".ln_2.bias"])
        h = F.gelu(F.linear(h, w[p + ".mlp.c_fc.weight"], w[p + ".mlp.c_fc.bias"]))
        return x + F.linear(h, w[p + ".mlp.c_proj.weight"], w[p + ".mlp.c_proj.bias"])


def assert_same_function(y, y2):
    for a, b in zip(y, y2, strict=True):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


def permute_like_a_user(state: dict[str, torch.Tensor], groups: list[Group], seed: int) -> dict[str, torch.Tensor]:
    """Each group's window of each listed slice reordered by its own random permutation (the truth)."""
    gen = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in state.items()}
    truth = {}
    for g in groups:
        p = torch.randperm(g.size, generator=gen)
        truth[g.name] = p
        for s in g.slices:
            window = out[s.key].narrow(s.axis, s.start, g.size)
            window.copy_(window.index_select(s.axis, p))
    return out, truth


# -- 1. the groups are exact symmetries ------------------------------------------------------------


def write_pair(folder, arch: str, scale: int, seed: int):
    """Two independent random models of one architecture (their matching permutes nearly every group)."""
    a, b = folder / "a.safetensors", folder / "b.safetensors"
    for path, offset in ((a, 0), (b, 1)):
        write_synthetic(str(path), SynthSpec(arch, scale=scale, seed=seed + offset, std=0.2))
    return a, b


@pytest.fixture(scope="module")
def sd1_pair(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("rebasin_sd1"), "sd1", 8, 101)


@pytest.fixture(scope="module")
def sdxl_pair(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("rebasin_sdxl"), "sdxl", 16, 201)


def test_permuting_an_sd1_model_leaves_its_blocks_computing_the_same(sd1_pair, tmp_path):
    a, b = sd1_pair
    out = tmp_path / "pb.safetensors"
    code, stdout, err = run("rebasin", "--a", a, "--b", b, "--dtype", "fp32", "-o", out, "--no-history")
    assert code == 0, err
    assert stdout.splitlines()[-1] == str(out)
    w, w2 = fp32(load(b)), load(out)
    moved = [k for k in w if w[k].is_floating_point() and not torch.equal(w[k], w2[k])]
    assert any(".ff.net.0.proj.weight" in k for k in moved) and any("to_q" in k for k in moved)
    assert not any(k.startswith("first_stage_model.") or "norm" in k for k in moved)  # never the VAE, norms
    gen = torch.Generator().manual_seed(5)
    width = w[SD1_BLOCK + ".attn1.to_q.weight"].shape[0]
    x = torch.randn(2, 77, width, generator=gen)
    context = torch.randn(2, 77, w[SD1_BLOCK + ".attn2.to_k.weight"].shape[1], generator=gen)
    assert_same_function(unet_block(w, SD1_BLOCK, x, context, 8), unet_block(w2, SD1_BLOCK, x, context, 8))
    t = torch.randn(2, w[UNET + "time_embed.0.weight"].shape[1], generator=gen)
    assert_same_function([time_mlp(w, UNET + "time_embed", t)], [time_mlp(w2, UNET + "time_embed", t)])
    h = torch.randn(2, 77, w[CLIP_L + ".self_attn.q_proj.weight"].shape[0], generator=gen)
    assert_same_function([clip_l_layer(w, CLIP_L, h)], [clip_l_layer(w2, CLIP_L, h)])
    # A test that can fail: the same forward pass sees a permutation of the residual stream.
    broken = dict(w2)
    key = SD1_BLOCK + ".attn1.to_q.weight"
    broken[key] = w2[key].flip(1)
    y, y2 = unet_block(w, SD1_BLOCK, x, context, 8), unet_block(broken, SD1_BLOCK, x, context, 8)
    assert float((y[0] - y2[0]).abs().max()) > 1e-3


def test_permuting_an_sdxl_model_leaves_its_blocks_and_both_text_encoders_computing_the_same(sdxl_pair, tmp_path):
    a, b = sdxl_pair
    out = tmp_path / "pb.safetensors"
    code, _, err = run("rebasin", "--a", a, "--b", b, "--dtype", "fp32", "-o", out, "--no-history")
    assert code == 0, err
    w, w2 = fp32(load(b)), load(out)
    gen = torch.Generator().manual_seed(6)
    width = w[SDXL_BLOCK + ".attn1.to_q.weight"].shape[0]
    heads = width * 5 // w[UNET + "time_embed.0.weight"].shape[1]  # 64-channel heads at full size: 10 at 640
    assert heads == 10
    x = torch.randn(2, 77, width, generator=gen)
    context = torch.randn(2, 77, w[SDXL_BLOCK + ".attn2.to_k.weight"].shape[1], generator=gen)
    assert_same_function(unet_block(w, SDXL_BLOCK, x, context, heads), unet_block(w2, SDXL_BLOCK, x, context, heads))
    for mlp in ("time_embed", "label_emb.0"):
        t = torch.randn(2, w[UNET + mlp + ".0.weight"].shape[1], generator=gen)
        assert_same_function([time_mlp(w, UNET + mlp, t)], [time_mlp(w2, UNET + mlp, t)])
    h = torch.randn(2, 77, w[SDXL_CLIP_L + ".self_attn.q_proj.weight"].shape[0], generator=gen)
    assert_same_function([clip_l_layer(w, SDXL_CLIP_L, h)], [clip_l_layer(w2, SDXL_CLIP_L, h)])
    g = torch.randn(2, 77, w[SDXL_CLIP_G + ".attn.out_proj.weight"].shape[0], generator=gen)
    assert_same_function([open_clip_layer(w, SDXL_CLIP_G, g, 20)], [open_clip_layer(w2, SDXL_CLIP_G, g, 20)])
    moved = {k for k in w if w[k].is_floating_point() and not torch.equal(w[k], w2[k])}
    assert SDXL_CLIP_G + ".attn.in_proj_weight" in moved and UNET + "label_emb.0.0.weight" in moved


def test_the_self_check_passes_on_real_layout_blocks_and_fails_on_a_group_that_is_no_symmetry():
    results = block_checks()
    assert {r.what.split()[0] for r in results} == {"sd1", "sd2", "sdxl"}
    assert all(r.passed for r in results) and len(results) >= 15
    assert check_blocks()  # raises nothing

    def q_without_k(shapes, arch):
        groups = permutation_groups(shapes, arch)
        return [
            Group(g.name, g.size, tuple(s for s in g.slices if ".to_k." not in s.key), g.layer)
            if ".attn1.qk." in g.name
            else g
            for g in groups
        ]

    broken = block_checks(groups_of=q_without_k)
    failed = [r for r in broken if not r.passed]
    assert failed and all("attn1" in r.what for r in failed)
    import lib_merge.rebasin.selfcheck as selfcheck

    original = selfcheck.block_checks
    selfcheck.block_checks = lambda seed=selfcheck.SEED: original(seed, q_without_k)
    try:
        with pytest.raises(SelfCheckError, match="self-check failed for group .*attn1.qk"):
            selfcheck.check_blocks()
    finally:
        selfcheck.block_checks = original


def test_groups_cover_the_listed_symmetries_and_nothing_else(sd1_pair, sdxl_pair):
    for path, arch, heads in ((sd1_pair[0], "sd1", 8), (sdxl_pair[0], "sdxl", 10)):
        source = SourceModel(str(path))
        try:
            groups = permutation_groups(source.shapes, arch)
        finally:
            source.close()
        block = SD1_BLOCK if arch == "sd1" else SDXL_BLOCK
        names = {g.name for g in groups}
        assert {f"{block}.attn1.qk.{h}" for h in range(heads)} <= names
        assert {f"{block}.attn2.vo.{h}" for h in range(heads)} <= names
        assert f"{block}.ff" in names and f"{UNET}time_embed.hidden" in names
        keys = {s.key for g in groups for s in g.slices}
        assert not any(k.startswith(("first_stage_model.", UNET + "input_blocks.0.")) for k in keys)
        assert not any("norm" in k or "embeddings" in k or "proj_in" in k or "proj_out" in k for k in keys)
        ff = next(g for g in groups if g.name == f"{block}.ff")
        assert [(s.key.rsplit(".", 2)[-2] + "." + s.key.rsplit(".", 1)[-1], s.axis, s.start) for s in ff.slices] == [
            ("proj.weight", 0, 0), ("proj.weight", 0, ff.size), ("proj.bias", 0, 0), ("proj.bias", 0, ff.size),
            ("2.weight", 1, 0),
        ]  # fmt: skip


def test_flux_and_sd3_get_one_clear_error(models, tmp_path):
    flux = models("flux_rb", arch="flux", seed=3)
    code, out, err = run("rebasin", "--a", flux, "--b", flux, "-o", tmp_path / "x.safetensors", "--no-history")
    assert code == 3 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "re-basin supports SD1, SD2 and SDXL" in err
    with pytest.raises(Exception, match="re-basin supports SD1, SD2 and SDXL"):
        permutation_groups({}, "sd3")


# -- 2. matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,scale", [("sd1", 8), ("sdxl", 16)])
def test_a_known_permutation_plus_noise_is_matched_back_exactly(arch, scale, tmp_path):
    a_path, b_path = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_synthetic(str(a_path), SynthSpec(arch, scale=scale, seed=7, dtype=torch.float32, std=0.2))
    source = SourceModel(str(a_path))
    groups = permutation_groups(source.shapes, arch)
    state = load(a_path)
    permuted, truth = permute_like_a_user(state, groups, seed=8)
    gen = torch.Generator().manual_seed(9)
    noisy = {k: v + 0.02 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in permuted.items()}  # fmt: skip
    save_file(noisy, str(b_path))
    b = SourceModel(str(b_path))
    try:
        result = match_models(source, b, groups)
    finally:
        source.close()
        b.close()
    assert result.converged and result.sweeps == 1  # independent groups: one sweep settles all
    # Row p[i] of B is row i of A, so π = p⁻¹ puts B's rows back in A's order.
    wrong = [g.name for g in groups if not torch.equal(result.permutations[g.name], torch.argsort(truth[g.name]))]
    assert wrong == []
    assert sum(not torch.equal(p, torch.arange(len(p))) for p in truth.values()) > len(groups) * 0.9


def test_a_model_matched_to_itself_is_the_identity_even_with_equal_rows(sd1_pair):
    source = SourceModel(str(sd1_pair[0]))
    try:
        groups = permutation_groups(source.shapes, "sd1")
        result = match_models(source, source, groups)
    finally:
        source.close()
    assert all(torch.equal(p, torch.arange(len(p))) for p in result.permutations.values())
    # Equal rows tie: the current (identity) permutation is kept, not swapped for an equal one.
    scores = torch.ones(4, 4)
    assert not matching._improves(scores, torch.arange(4), torch.tensor([1, 0, 3, 2]))


def test_the_argmax_fast_path_gives_the_solvers_permutation():
    gen = torch.Generator().manual_seed(11)
    for n in (3, 17, 300):
        perm = torch.randperm(n, generator=gen)
        scores = torch.randn(n, n, generator=gen)
        scores[torch.arange(n), perm] += 10  # every row's maximum in its own column
        fast, solver_calls = matching._assign(scores)
        assert solver_calls == 0 and torch.equal(fast, perm) and torch.equal(fast, solve(scores))
    # Rows that want the same column: the solver runs and finds the optimum (brute force for n = 6).
    scores = torch.rand(6, 6, generator=gen)
    scores[:, 2] += 1
    assigned, solver_calls = matching._assign(scores)
    best = max(itertools.permutations(range(6)), key=lambda p: sum(float(scores[i, j]) for i, j in enumerate(p)))
    assert solver_calls == 1 and assigned.tolist() == list(best)


class DictReader:
    def __init__(self, tensors):
        self.tensors = tensors
        self.reads = 0

    def view(self, key):
        self.reads += 1
        return self.tensors[key]

    def release(self, key):
        pass


def test_coordinate_ascent_repeats_sweeps_when_groups_share_a_tensor():
    """A chain W1 (h1 × 8), W2 (h2 × h1), W3 (8 × h2): W2 has both axes permuted, so the groups depend
    on each other and later sweeps refine what the first found."""
    gen = torch.Generator().manual_seed(12)
    h1, h2 = 24, 20
    a = {"w1": torch.randn(h1, 8, generator=gen), "w2": torch.randn(h2, h1, generator=gen),
         "w3": torch.randn(8, h2, generator=gen)}  # fmt: skip
    p1, p2 = torch.randperm(h1, generator=gen), torch.randperm(h2, generator=gen)
    b = {"w1": a["w1"][p1], "w2": a["w2"][p2][:, p1], "w3": a["w3"][:, p2]}
    groups = [
        Group("h1", h1, (Slice("w1", 0, 0), Slice("w2", 1, 0)), "l1"),
        Group("h2", h2, (Slice("w2", 0, 0), Slice("w3", 1, 0)), "l2"),
    ]
    result = match_models(DictReader(a), DictReader(b), groups, MatchSettings(max_sweeps=10))
    assert result.converged and result.sweeps >= 2
    assert torch.equal(result.permutations["h1"], torch.argsort(p1))
    assert torch.equal(result.permutations["h2"], torch.argsort(p2))
    capped = match_models(DictReader(a), DictReader(b), groups, MatchSettings(max_sweeps=1))
    assert capped.sweeps == 1 and not capped.converged


# -- 3. the recipe node, the cache, the command line --------------------------------------------


def reference_merge(a: dict, pb: dict, alpha: float) -> dict:
    return {k: (1 - alpha) * a[k].float() + alpha * pb[k].float() for k in a if a[k].is_floating_point()}


def test_rebasin_under_weighted_sum_merges_a_with_the_permuted_b(sd1_pair, tmp_path):
    a, b = sd1_pair
    pb, merged = tmp_path / "pb.safetensors", tmp_path / "m.safetensors"
    assert run("rebasin", "--a", a, "--b", b, "--dtype", "fp32", "-o", pb, "--no-history")[0] == 0
    code, out, err = run("rebasin", "--a", a, "--b", b, "--alpha", 0.3, "--dtype", "fp32", "-o", merged)
    assert code == 0, err
    recipe_hash, path = out.splitlines()
    assert path == str(merged) and len(recipe_hash) == 64
    assert "from the cache" in err  # the second call of the same pair matches nothing
    expected, got = reference_merge(load(a), load(pb), 0.3), load(merged)
    worst = max(float((expected[k] - got[k]).abs().max()) for k in expected if k in got)
    assert worst < 1e-6
    from helpers import metadata

    text = metadata(merged)["alloy_recipe"]
    assert "weighted_sum(A, m1, alpha=0.3" in text and "m1 = rebasin(B, ref=A, max_sweeps=10)" in text


def test_rebasin_of_a_model_to_itself_writes_the_model_unchanged(models, tmp_path):
    a = models("sd1_rb_fp32", arch="sd1", scale=8, seed=31, dtype=torch.float32)
    out = tmp_path / "same.safetensors"
    code, _, err = run("rebasin", "--a", a, "--b", a, "--dtype", "fp32", "-o", out, "--no-history")
    assert code == 0, err
    assert "0 permuted" in err or "(0 of" in err
    original, written = load(a), load(out)
    assert all(torch.equal(original[k], written[k]) for k in written)


def test_the_cache_is_used_on_the_second_merge_and_a_damaged_cache_is_matched_again(sd1_pair, tmp_path, monkeypatch):
    from lib_merge.engine.to_file import SaveOptions, merge_to_file
    from lib_merge.rebasin import permuted as permuted_module
    from lib_merge.recipe import parse_recipe

    a, b = sd1_pair
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALLOY_HOME", str(cache))
    calls = []
    original = permuted_module.match_models
    monkeypatch.setattr(permuted_module, "match_models", lambda *args, **kw: calls.append(1) or original(*args, **kw))

    def merge(alpha: float, name: str):
        text = (f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\n'
                f"merged = weighted_sum(A, rebasin(B, ref=A), alpha={alpha})\n")  # fmt: skip
        return merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / name)))

    first = merge(0.25, "one.safetensors")
    files = os.listdir(cache / "rebasin")
    assert calls == [1] and len(files) == 1 and any("matched" in n for n in first.notes)
    second = merge(0.75, "two.safetensors")
    assert calls == [1] and any("from the cache" in n for n in second.notes)
    (cache / "rebasin" / files[0]).write_bytes(b"\x00" * 100)  # damaged: matched again, no error
    third = merge(0.5, "three.safetensors")
    assert calls == [1, 1] and any("matched" in n for n in third.notes)
    assert (cache / "rebasin" / files[0]).stat().st_size > 100


def test_recipe_text_round_trips_and_bad_rebasin_recipes_get_one_clear_error():
    from lib_merge.errors import RecipeError
    from lib_merge.recipe import parse_recipe, print_recipe

    text = ('alloy-recipe 1\nA = model("a.safetensors")\nB = model("b.safetensors")\n'
            "merged = weighted_sum(A, rebasin(B, ref=A, max_sweeps=3), alpha=0.5)\n")  # fmt: skip
    printed = print_recipe(parse_recipe(text))
    assert "m1 = rebasin(B, ref=A, max_sweeps=3)" in printed
    assert print_recipe(parse_recipe(printed)) == printed
    with pytest.raises(RecipeError, match=r"rebasin\(\) takes 2 models \(the last as ref=\), got 1"):
        parse_recipe('alloy-recipe 1\nB = model("b")\nmerged = rebasin(B)\n')
    with pytest.raises(RecipeError, match="whole number"):
        parse_recipe('alloy-recipe 1\nA = model("a")\nB = model("b")\nmerged = rebasin(B, ref=A, max_sweeps=1.5)\n')


def test_bad_inputs_are_refused_before_any_matching(sd1_pair, sdxl_pair, tmp_path):
    a, b = sd1_pair
    out = tmp_path / "x.safetensors"
    nested = tmp_path / "nested.alloy"
    nested.write_text(
        f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = rebasin(weighted_sum(A, B), ref=A)\n'
    )
    code, _, err = run("merge", nested, "-o", out, "--no-history")
    assert code == 3 and "model files, not merges" in err
    code, _, err = run("rebasin", "--a", a, "--b", b, "--max-sweeps", 0, "-o", out)
    assert code == 3 and "max_sweeps must lie in [1, 100], not 0" in err
    code, _, err = run("rebasin", "--a", a, "--b", sdxl_pair[1], "-o", out, "--no-history")
    assert code == 4 and "different architectures" in err
    code, _, err = run("rebasin", "--a", a, "--b", tmp_path / "missing.safetensors", "-o", out)
    assert code == 4 and "not found" in err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if "alloy-tmp" in n]


def test_self_check_on_the_command_line(sd1_pair, tmp_path):
    a, b = sd1_pair
    out = tmp_path / "checked.safetensors"
    code, stdout, err = run("rebasin", "--a", a, "--b", b, "--self-check", "-o", out, "--no-history")
    assert code == 0, err
    assert "self-check passed" in err and stdout.splitlines()[-1] == str(out)


def test_merge_command_and_forms_wrap_b_and_c_in_rebasin(sd1_pair, tmp_path):
    from lib_merge.recipe import print_recipe
    from lib_merge.recipe.form import MergeSettings, MethodSettings, build_method_recipe, build_recipe

    text = print_recipe(build_recipe(MergeSettings("a", "b", "add_difference", "c", 0.5, rebasin=True)))
    assert "rebasin(B, ref=A, max_sweeps=10)" in text and "rebasin(C, ref=A, max_sweeps=10)" in text
    text = print_recipe(build_method_recipe(MethodSettings("a", ["b", "c"], "ties", rebasin=True, max_sweeps=4)))
    assert text.count("ref=A, max_sweeps=4") == 2
    a, b = sd1_pair
    out = tmp_path / "m.safetensors"
    code, _, err = run("merge", "--a", a, "--b", b, "--mode", "weighted_sum", "--alpha", 0.5, "--rebasin", "-o", out)
    assert code == 0, err and "re-basin" in err


def test_the_merge_tab_checkbox_and_the_xyz_axis(sd1_pair):
    from lib_merge.app.plots.axes import AXIS_TYPES
    from lib_merge.errors import PlanError
    from lib_merge.ui.values import merge_request, restore_values

    request = merge_request({"model_a": "a", "model_b": "b", "mode": "weighted_sum", "alpha": 0.4, "rebasin": True})
    assert request.settings.rebasin is True
    values, _ = restore_values(request.settings.record(), "A=a [];B=b []", ["a", "b"])
    assert values["rebasin"] is True
    parsed = AXIS_TYPES["rebasin"].parse("off, on", None)
    assert [v.value for v in parsed] == [False, True]
    with pytest.raises(PlanError, match="give on or off"):
        AXIS_TYPES["rebasin"].parse("maybe", None)


def test_rebasin_progress_events_name_the_phase(sd1_pair, tmp_path, monkeypatch):
    from lib_merge.engine.options import EngineOptions
    from lib_merge.engine.to_file import SaveOptions, merge_to_file
    from lib_merge.recipe import parse_recipe

    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    a, b = sd1_pair
    events = []
    text = f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = rebasin(B, ref=A)\n'
    save = SaveOptions(str(tmp_path / "p.safetensors"))
    merge_to_file(parse_recipe(text), save, EngineOptions(progress=events.append))
    layers = [e for e in events if e.phase == "rebasin"]
    assert layers and layers[-1].done == layers[-1].total and layers[-1].unit == "layers"
    assert math.isclose(layers[-1].total, len({g.layer for g in permutation_groups(SourceModel(str(a)).shapes, "sd1")}))


def test_rebasin_in_the_loaded_webui_model_equals_the_saved_merge(sd1_pair, tmp_path):
    """The Merge tab's checkbox in the WebUI double: merged into the loaded model, matched once, equal to
    A·(1−α) + π(B)·α computed from the permuted file."""
    from conftest import WebUI

    from lib_merge.app.workbench import MergeRequest
    from lib_merge.engine.live import model_tensors
    from lib_merge.recipe.form import MergeSettings

    a, b = sd1_pair
    pb = tmp_path / "pb.safetensors"
    assert run("rebasin", "--a", a, "--b", b, "--dtype", "fp32", "-o", pb, "--no-history")[0] == 0
    ui = WebUI(tmp_path / "webui", [a, b, a])
    try:
        settings = MergeSettings(ui.title("model_a"), ui.title("model_b"), alpha=0.5, rebasin=True)
        outcome = ui.workbench.merge(MergeRequest(settings=settings))
        assert "re-basin" in outcome.message and "rebasin(B, ref=A" in outcome.recipe_text
        assert outcome.name.startswith("model_a_x_model_b_ws_a0.5_rebasin-")
        live = model_tensors(ui.model)
        expected = reference_merge(load(a), load(pb), 0.5)
        key = SD1_BLOCK + ".ff.net.0.proj.weight"
        assert torch.allclose(live[key].float(), expected[key], atol=1e-3)
        worst = max(float((live[k].float() - expected[k]).abs().max()) for k in expected if k in live)
        assert worst < 2e-3  # the live model holds fp16
        again = ui.workbench.merge(MergeRequest(settings=MergeSettings(**{**settings.as_dict(), "alpha": 0.7})))
        assert "from the cache" in again.message
    finally:
        ui.close()


def test_an_inpainting_a_with_a_plain_b_keeps_its_extra_channels(tmp_path):
    """The input convolution is in no group: an inpainting A merges a re-based plain B as it would B."""
    a, b = tmp_path / "inpaint.safetensors", tmp_path / "plain.safetensors"
    write_synthetic(str(a), SynthSpec("sd1", scale=8, seed=51, input_channels=9, dtype=torch.float32))
    write_synthetic(str(b), SynthSpec("sd1", scale=8, seed=52, dtype=torch.float32))
    pb, merged = tmp_path / "pb.safetensors", tmp_path / "m.safetensors"
    # π(B) alone, the plain B first: the inpainting reference's extra channels do not matter. Paths relative to
    # the models folder, as the WebUI and recipes give them.
    recipe = tmp_path / "pb.alloy"
    recipe.write_text(f'alloy-recipe 1\nA = model("{a.name}")\nB = model("{b.name}")\nmerged = rebasin(B, ref=A)\n')
    code, _, err = run("--models-dir", tmp_path, "merge", recipe, "--dtype", "fp32", "-o", pb, "--no-history")
    assert code == 0, err
    code, _, err = run("rebasin", "--a", a, "--b", b, "--alpha", 0.5, "--dtype", "fp32", "-o", merged, "--no-history")
    assert code == 0, err
    conv = UNET + "input_blocks.0.0.weight"
    wa, wpb, wm = load(a), load(pb), load(merged)
    assert wm[conv].shape[1] == 9 and torch.equal(wm[conv][:, 4:], wa[conv][:, 4:])
    assert torch.allclose(wm[conv][:, :4], 0.5 * wa[conv][:, :4] + 0.5 * wpb[conv], atol=1e-6)
    key = SD1_BLOCK + ".ff.net.2.weight"
    assert torch.allclose(wm[key], 0.5 * wa[key] + 0.5 * wpb[key], atol=1e-6)


def test_a_cache_file_that_is_not_a_set_of_permutations_is_a_miss(tmp_path):
    from lib_merge.rebasin.store import load_permutations, store_permutations

    groups = [Group("g", 4, (Slice("w", 0, 0),), "l")]
    sha_a, sha_b = "a" * 64, "b" * 64
    path = tmp_path / "cache.safetensors"
    store_permutations(path, {"g": torch.tensor([2, 0, 3, 1])}, sha_a, sha_b, 10, converged=True)
    assert load_permutations(path, groups, sha_a, sha_b, 10)["g"].tolist() == [2, 0, 3, 1]
    assert load_permutations(path, groups, sha_b, sha_a, 10) is None  # another pair of models
    for bad in ([0, 0, 1, 2], [0, 1, 2, 7], [-1, 0, 1, 2], [0, 1, 2]):
        store_permutations(path, {"g": torch.tensor(bad)}, sha_a, sha_b, 10, converged=True)
        assert load_permutations(path, groups, sha_a, sha_b, 10) is None, bad
    store_permutations(path, {"g": torch.arange(4)}, sha_a, sha_b, 3, converged=False)
    assert load_permutations(path, groups, sha_a, sha_b, 10) is None  # capped at 3 sweeps: only good for 3
    assert load_permutations(path, groups, sha_a, sha_b, 3) is not None
