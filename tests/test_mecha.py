"""Reading sd-mecha .mecha recipes; the sample is what sd-mecha 1.1.8 serialises."""

from __future__ import annotations

import pytest
import torch
from helpers import load
from test_cli import cli
from test_merge import merge

from lib_merge.errors import MechaImportError
from lib_merge.recipe import print_recipe
from lib_merge.recipe.mecha import from_mecha

SLOTS = ["BASE"] + [f"IN{i:02}" for i in range(12)] + ["M00"] + [f"OUT{i:02}" for i in range(12)]


def sample(a, b, c) -> str:
    blocks = " ".join(f"{s}={round(i / 25, 2)}" for i, s in enumerate(SLOTS))
    return (
        "version 0.1.0\n"
        f'model "{a}" model_config="sd1-ldm" merge_space="weight"\n'
        f'model "{b}" model_config="sd1-ldm" merge_space="weight"\n'
        f"dict {blocks}\n"
        'literal &2 model_config="sd1-supermerger_blocks" merge_space="param"\n'
        'merge "convert_sd1_blocks_to_ldm" &3\n'
        'merge "weighted_sum" &0 &1 &4\n'
        f'model "{c}" model_config="sd1-ldm" merge_space="weight"\n'
        'merge "subtract" &1 &6\n'
        "dict key=0.5\n"
        'literal &8 model_config="singleton-mecha" merge_space="param"\n'
        'merge "convert_singleton" &9\n'
        'merge "add_difference" &5 &7 &10\n'
        'merge "fallback" &11 &5\n'
    )


def test_sample_imports_to_the_equivalent_recipe_and_the_same_tensors(sd1, tmp_path):
    imported = from_mecha(sample(*sd1))
    assert imported.notes == ["block mapping differs from sd-mecha for time_embed (BASE vs IN00)"]
    blocks = " ".join(f"{s}={round(i / 25, 2)}" for i, s in enumerate(SLOTS))
    equivalent = (
        f'alloy-recipe 1\nA = model("{sd1[0]}")\nB = model("{sd1[1]}")\nC = model("{sd1[2]}")\n'
        f'm1 = weighted_sum(A, B, alpha=blocks("{blocks}"), elemental=elemental("IN00:time_embed:0.0"))\n'
        "merged = add_difference(m1, B, C, alpha=0.5)\n"
    )
    mine = merge(print_recipe(imported.root), tmp_path / "imported.safetensors")
    theirs = merge(equivalent, tmp_path / "equivalent.safetensors")
    assert mine.recipe_hash == theirs.recipe_hash
    out, ref = load(mine.path), load(theirs.path)
    assert all(torch.equal(out[k], ref[k]) for k in ref)
    a, b = load(sd1[0]), load(sd1[1])
    key = "model.diffusion_model.time_embed.0.weight"  # sd-mecha's BASE (0.0) for time_embed: stays A before the add
    c = load(sd1[2])
    expected = a[key].double() + 0.5 * (b[key].double() - c[key].double())
    torch.testing.assert_close(out[key].double(), expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(
    "text, words",
    [
        ("version 0.2.0\n", "unsupported .mecha version '0.2.0'; supported: 0.1.0"),
        ('version 0.1.0\nmodel "a" model_config="sd1-ldm" merge_space="weight"\nmerge "rotate" &0 &0\n',
         'line 3: method "rotate" is not in the supported subset'),
        ('version 0.1.0\nmodel "a" model_config="gpt2" merge_space="weight"\n', "line 2: model_config 'gpt2'"),
    ],
)  # fmt: skip
def test_outside_the_subset_is_refused_with_the_line(text, words):
    with pytest.raises(MechaImportError, match=words.replace("(", r"\(")):
        from_mecha(text)


def test_ties_over_deltas_becomes_ties(sd1):
    text = (
        "version 0.1.0\n"
        + "".join(f'model "{p}" model_config="sd1-ldm" merge_space="weight"\n' for p in sd1)
        + 'merge "subtract" &1 &0\nmerge "subtract" &2 &0\nmerge "ties_sum" &3 &4 k=0.3 vote_sgn=true\n'
        + 'dict key=1.0\nliteral &6 model_config="singleton-mecha" merge_space="param"\n'
        + 'merge "add_difference" &0 &5 &7\n'
    )
    printed = print_recipe(from_mecha(text).root)
    assert 'merged = ties(A, B, C, alpha=1.0, density=0.3, sign="count")' in printed


def test_cli_from_mecha(sd1, tmp_path):
    path = tmp_path / "r.mecha"
    path.write_text(sample(*sd1), encoding="utf-8")
    proc = cli("recipe", "from-mecha", path, "-o", tmp_path / "r.alloy")
    assert proc.returncode == 0 and "time_embed" in proc.stderr
    assert "merged = add_difference(m1, B, C, alpha=0.5)" in (tmp_path / "r.alloy").read_text(encoding="utf-8")


def test_cast_becomes_a_dtype_hint(sd1):
    text = (
        "version 0.1.0\n"
        + "".join(f'model "{p}" model_config="sd1-ldm" merge_space="weight"\n' for p in sd1[:2])
        + 'merge "slerp" &0 &1 t=0.3\nmerge "cast" &2 device="cpu" dtype="bfloat16"\n'
    )
    printed = print_recipe(from_mecha(text).root)
    assert printed.endswith('m1 = slerp(A, B, alpha=0.3)\nmerged = cast(m1, dtype="bf16")\n'), printed
