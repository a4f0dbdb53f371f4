"""Elemental rules, include/exclude and Adjust on miniature SD1 and SDXL models."""

from __future__ import annotations

import pytest
import torch
from helpers import load
from test_merge import component_keys, merge

from lib_merge.errors import BlockSchemaError, BlockVectorError, ElementalSyntaxError, ParameterError
from lib_merge.recipe import parse_recipe, print_recipe

UNET = "model.diffusion_model."


def text(a, b, expr: str) -> str:
    return f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = {expr}\n'


def alpha_used(out, a, b, key) -> float:
    """The α a weighted sum used for one key, read back from the tensors."""
    x, y, z = a[key].double(), b[key].double(), out[key].double()
    return float(((z - x) * (y - x)).sum() / ((y - x) ** 2).sum())


def test_elemental_on_sdxl_uses_sdxl_block_names(sdxl, tmp_path):
    rules = "M00:attn:0.9, OUT03::0.1, OUT03:NOT norm ff:0.3"
    out = load(merge(text(*sdxl[:2], f'weighted_sum(A, B, alpha=0.5, elemental=elemental("{rules}"))'),
                     tmp_path / "e.safetensors", torch.float32).path)  # fmt: skip
    a, b = load(sdxl[0]), load(sdxl[1])
    checked = 0
    for key in component_keys("sdxl", a):
        if not key.startswith(UNET) or a[key].numel() < 8:
            continue
        if key.startswith(UNET + "middle_block.") and "attn" in key:
            expected = 0.9
        elif key.startswith(UNET + "output_blocks.3."):
            expected = 0.1 if ("norm" in key or "ff" in key) else 0.3  # last match wins
        else:
            expected = 0.5
        assert alpha_used(out, a, b, key) == pytest.approx(expected, abs=2e-3), key
        checked += 1
    assert checked > 100


def test_elemental_not_blocks_and_letters(sd1, tmp_path):
    rules = "NOT OUT04:attn:1"
    out = load(merge(text(*sd1[:2], f'weighted_sum(A, B, alpha=0.0, elemental=elemental("{rules}"))'),
                     tmp_path / "n.safetensors", torch.float32).path)  # fmt: skip
    a, b = load(sd1[0]), load(sd1[1])
    for key in component_keys("sd1", a):
        if not key.startswith(UNET) or a[key].numel() < 8:
            continue
        merged = "attn" in key and not key.startswith(UNET + "output_blocks.4.")
        assert alpha_used(out, a, b, key) == pytest.approx(1.0 if merged else 0.0, abs=2e-3), key
    rolled = text(*sd1[:2], 'weighted_sum(A, B, alpha=0.5, elemental=elemental("OUT05::R", seed=3))')
    first = load(merge(rolled, tmp_path / "r1.safetensors", torch.float32).path)
    second = load(merge(rolled, tmp_path / "r2.safetensors", torch.float32).path)
    key = UNET + "output_blocks.5.1.proj_in.weight"
    assert torch.equal(first[key], second[key]) and 0 <= alpha_used(first, a, b, key) <= 1


@pytest.mark.parametrize(
    "rules, words",
    [
        ("OUT04-attn:1", 'elemental entry 1 "OUT04-attn:1": expected Blocks:Elements:Ratio'),
        ("IN01::0.5, IN12::1", "entry 2 \"IN12::1\": unknown block 'IN12' for SD1"),
        ("OUT05-IN02::1", "bad range 'OUT05-IN02'"),
        ("IN01::half", "'half' is not a number or R/U/X"),
    ],
)
def test_elemental_errors_name_the_entry(sd1, tmp_path, rules, words):
    with pytest.raises(ElementalSyntaxError, match=words.replace("(", r"\(")):
        merge(text(*sd1[:2], f'weighted_sum(A, B, elemental=elemental("{rules}"))'), tmp_path / "x.safetensors")


def test_exclude_and_include(sd1, tmp_path):
    a = load(sd1[0])
    ex = load(merge(text(*sd1[:2], 'weighted_sum(A, B, filter=exclude("VAE", "IN00", elements=["attn2"]))'),
                    tmp_path / "x.safetensors", torch.float32).path)  # fmt: skip
    inc = load(merge(text(*sd1[:2], 'weighted_sum(A, B, filter=include("OUT03"))'), tmp_path / "i.safetensors",
                     torch.float32).path)  # fmt: skip
    for key in component_keys("sd1", a):
        skipped = (
            key.startswith("first_stage_model.")
            or key.startswith((UNET + "input_blocks.0.", UNET + "time_embed."))
            or "attn2" in key
        )
        assert torch.equal(ex[key], a[key].float()) == skipped, key
        assert torch.equal(inc[key], a[key].float()) != key.startswith(UNET + "output_blocks.3."), key
    with pytest.raises(BlockVectorError, match="unknown block 'IN99'"):
        merge(text(*sd1[:2], 'weighted_sum(A, B, filter=exclude("IN99"))'), tmp_path / "y.safetensors")


def test_adjust_changes_exactly_its_six_keys(sd1, sdxl, tmp_path):
    for n, (models, bias_shift) in enumerate(((sd1, [0, -0.02, 0.02 / 3, 0.04 / 3]), (sdxl, [0, 0, 0, 0.02]))):
        plain = load(merge(text(*models[:2], "weighted_sum(A, B)"), tmp_path / f"p{n}.safetensors", torch.float32).path)
        adjusted = text(*models[:2], 'adjust(weighted_sum(A, B), "2,0,-3,0,1,0,0,0")')
        out = load(merge(adjusted, tmp_path / f"a{n}.safetensors", torch.float32).path)
        changed = sorted(k for k in plain if not torch.equal(plain[k], out[k]))
        assert changed == sorted(UNET + k for k in ("input_blocks.0.0.weight", "input_blocks.0.0.bias",
                                                     "out.2.weight", "out.2.bias"))  # fmt: skip
        torch.testing.assert_close(
            out[UNET + "input_blocks.0.0.weight"], plain[UNET + "input_blocks.0.0.weight"] * 0.98
        )
        torch.testing.assert_close(out[UNET + "input_blocks.0.0.bias"], plain[UNET + "input_blocks.0.0.bias"] * 1.04)
        torch.testing.assert_close(out[UNET + "out.2.weight"], plain[UNET + "out.2.weight"] * 1.03)
        shift = torch.tensor(bias_shift, dtype=torch.float32)
        torch.testing.assert_close(out[UNET + "out.2.bias"], plain[UNET + "out.2.bias"] + shift)
    with pytest.raises(ParameterError, match="COL1 is 'x'"):
        parse_recipe(text(*sd1[:2], 'adjust(A, "0,0,0,0,0,x")'))


def test_adjust_is_refused_where_it_is_not_defined(models, tmp_path):
    sd3ish = text(*[models("sd2_a", arch="sd2", seed=1)] * 2, 'adjust(A, "1")')
    assert "adjust(A" in sd3ish
    with pytest.raises(BlockSchemaError):
        from lib_merge.methods.adjust import parse_adjust

        parse_adjust("1").bind("flux")


def test_options_print_canonically_and_round_trip():
    recipe = (
        'alloy-recipe 1\nA = model("a.safetensors")\nB = model("b.safetensors")\n'
        'm1 = weighted_sum(A, B, alpha=0.3, filter=exclude("VAE", "IN00", elements=["attn2"]),'
        ' elemental=elemental("OUT03  ::0.5 ,  M00:attn:1", seed=2))\n'
        'merged = adjust(m1, "0,0,0,0,1")\n'
    )
    printed = print_recipe(parse_recipe(recipe))
    assert 'elemental=elemental("OUT03::0.5, M00:attn:1.0", seed=2)' in printed
    assert 'filter=exclude("VAE", "IN00", elements=["attn2"])' in printed
    assert 'merged = adjust(m1, "0,0,0,0,1.0,0,0,0")' in printed
    assert print_recipe(parse_recipe(printed)) == printed


def test_cli_flags_build_the_same_recipe(sd1, tmp_path):
    from test_cli import cli

    out = tmp_path / "flags.safetensors"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--alpha", "0.4", "--elemental", "OUT03::0.2",
               "--exclude", "VAE attn2", "--adjust", "0,0,0,0,1", "-o", out, "--no-history")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    recipe = text(
        *sd1[:2],
        'adjust(weighted_sum(A, B, alpha=0.4, elemental=elemental("OUT03::0.2"), '
        'filter=exclude("VAE", elements=["attn2"])), "0,0,0,0,1", filter=exclude("VAE", elements=["attn2"]))',
    )
    same = merge(recipe, tmp_path / "recipe.safetensors")
    assert proc.stdout.splitlines()[-2] == same.recipe_hash
    both = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--include", "IN01", "--exclude", "IN02",
               "-o", tmp_path / "no.safetensors")  # fmt: skip
    assert both.returncode == 3 and "include or exclude, not both" in both.stderr


def test_extended_sdxl_vectors_and_fine_names(sdxl, tmp_path):
    from lib_merge.arch.blocks import SCHEMAS

    fine = SCHEMAS["sdxl_ext"]
    assert len(fine.slots) + 1 == 110 and fine.slots[:3] == ("CLIPL", "CLIPG", "IN0") and fine.slots[-1] == "LABEL"
    for key, slot in (
        ("input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", "IN411"),
        ("middle_block.1.transformer_blocks.7.ff.net.2.weight", "MID107"),
        ("output_blocks.2.2.conv.weight", "OUT22"),
        ("out.2.bias", "OUT9"),
        ("time_embed.0.weight", "TIME"),
        ("label_emb.0.0.weight", "LABEL"),
    ):
        assert fine.slot_of(UNET + key) == slot, key
    values = [round(i / 200, 3) for i in range(110)]  # every slot its own value; the 110th is the VAE
    vector = ",".join(str(v) for v in values)
    out = load(merge(text(*sdxl[:2], f'weighted_sum(A, B, alpha=blocks("{vector}"))'), tmp_path / "x.safetensors",
                     torch.float32).path)  # fmt: skip
    a, b = load(sdxl[0]), load(sdxl[1])
    checked = 0
    for key in component_keys("sdxl", a):
        slot = fine.slot_of(key)
        if slot is None or a[key].numel() < 8 or torch.equal(a[key], b[key]):
            continue
        expected = values[109] if slot == "VAE" else values[fine.index(slot)]
        assert alpha_used(out, a, b, key) == pytest.approx(expected, abs=2e-3), key
        checked += 1
    assert checked > 200
    rules = 'elemental("IN411:attn1:0.9")'
    fine_out = load(merge(text(*sdxl[:2], f"weighted_sum(A, B, alpha=0.5, elemental={rules})"),
                          tmp_path / "f.safetensors", torch.float32).path)  # fmt: skip
    key = UNET + "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight"
    other = UNET + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    assert alpha_used(fine_out, a, b, key) == pytest.approx(0.9, abs=2e-3)
    assert alpha_used(fine_out, a, b, other) == pytest.approx(0.5, abs=2e-3)
    named = load(merge(text(*sdxl[:2], 'weighted_sum(A, B, alpha=blocks("IN411=1 *=0"))'), tmp_path / "n.safetensors",
                       torch.float32).path)  # fmt: skip
    assert alpha_used(named, a, b, key) == pytest.approx(1.0, abs=2e-3)
    assert alpha_used(named, a, b, other) == pytest.approx(0.0, abs=2e-3)


def test_print_changes_lists_every_override_with_its_entry(sd1, tmp_path):
    import csv

    from test_cli import cli

    out = tmp_path / "o.safetensors"
    rules = "OUT03:attn2:0.9, OUT03:attn2.to_k:0.1, IN01:NOT attn:0.5"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--alpha", "0.3", "--elemental", rules,
               "--dtype", "fp32", "--print-changes", "--changes-csv", tmp_path / "c.csv", "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "  (entry " in line]
    a, b, merged = load(sd1[0]), load(sd1[1]), load(out)
    expected = {}
    for key in a:
        if key.startswith(UNET + "output_blocks.3.") and "attn2" in key:
            expected[key] = ("OUT03", 0.1 if "attn2.to_k" in key else 0.9, 2 if "attn2.to_k" in key else 1)
        elif key.startswith(UNET + "input_blocks.1.") and "attn" not in key:
            expected[key] = ("IN01", 0.5, 3)
    assert len(lines) == len(expected) and f"{len(expected)} keys changed by elemental entries" in proc.stderr
    for line in lines:
        key, slot, old, arrow, new, entry = line.replace("(entry ", "").rstrip(")").split()
        assert (slot, float(new), int(entry)) == expected[key] and float(old) == 0.3 and arrow == "→"
        if a[key].numel() >= 8 and not torch.equal(a[key], b[key]):
            assert alpha_used(merged, a, b, key) == pytest.approx(float(new), abs=2e-3), key
    with open(tmp_path / "c.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["key", "slot", "alpha_old", "alpha_new", "entry"] and len(rows) == len(lines) + 1
