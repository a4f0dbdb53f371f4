"""Recipe text: parsing without eval, canonical printing, round trip and the hash."""

from __future__ import annotations

import re
import shutil

import pytest

from lib_merge.engine.bind import bind_recipe, hashed_recipe
from lib_merge.errors import ModelNotFoundError, RecipeSyntaxError, RecipeTypeError
from lib_merge.io.hashing import file_sha256
from lib_merge.recipe import parse_recipe, print_recipe, recipe_hash
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef


def canonical(text: str, models_dir) -> tuple[str, str]:
    with bind_recipe(parse_recipe(text), str(models_dir)) as bound:
        hashed = hashed_recipe(bound)
    assert hashed.text == print_recipe(hashed.root) and hashed.digest == recipe_hash(hashed.root)
    return hashed.text, hashed.digest


def test_parse_builds_the_tree():
    root = parse_recipe(
        "alloy-recipe 1\n# comment\nA = model(\"a.safetensors\")\nB = model('b.safetensors')  # trailing\n"
        'C = model("c.safetensors")\n'
        "m1 = weighted_sum(A, B, alpha=-0.25)\n"
        'merged = add_difference(m1, B, C, alpha=blocks("*=0.5 OUT*=1"))\n'
    )
    assert isinstance(root, MergeNode) and root.method == "add_difference"
    inner = root.inputs[0]
    assert inner.method == "weighted_sum" and inner.params == {"alpha": -0.25}
    assert inner.inputs == (ModelRef("a.safetensors"), ModelRef("b.safetensors"))
    assert root.params["alpha"] == BlocksSpec("*=0.5 OUT*=1")


@pytest.mark.parametrize(
    "line, message",
    [
        ("merged = weighted_sum(A, B, alpha=0.1 + 0.2)", "line 4, col 35: operator '+' is not allowed in recipes"),
        ("merged = A.weight", "line 4, col 10: attribute access is not allowed"),
        ("merged = weighted_sum(A, X, alpha=0.5)", "name 'X' is used before it is assigned"),
        ('merged = __import__("os")', "unknown function '__import__'"),
        ("merged = weighted_sum(A, B, alpha=[x for x in A])", "comprehension is not allowed"),
        ('merged = weighted_sum(A, B, **{"alpha": 1})', "'**' arguments are not allowed"),
        ('A = model("again")', "name 'A' is assigned twice"),
        ("weighted_sum(A, B)", "only assignments"),
        ('merged = weighted_sum(A, B, alpha=f"{A}")', "f-string is not allowed"),
    ],
)
def test_syntax_errors_name_line_and_column(line, message):
    text = f'alloy-recipe 1\nA = model("a.safetensors")\nB = model("b.safetensors")\n{line}\n'
    with pytest.raises(RecipeSyntaxError, match=re.escape(message)):
        parse_recipe(text)


@pytest.mark.parametrize(
    "line, message",
    [
        ("merged = weighted_sum(A, B, gamma=0.5)", "has no parameter 'gamma'"),
        ("merged = weighted_sum(A, alpha=0.5)", "takes 2 models, got 1"),
        ("merged = weighted_sum(A, 0.5, alpha=0.5)", "argument 2 must be a model"),
        ("merged = weighted_sum(A, B, alpha=A)", "parameter 'alpha' must be a number or a block vector"),
        ("merged = 0.5", "must be a model or a merge"),
    ],
)
def test_type_errors_name_function_and_argument(line, message):
    with pytest.raises(RecipeTypeError, match=message):
        parse_recipe(f'alloy-recipe 1\nA = model("a.safetensors")\nB = model("b.safetensors")\n{line}\n')


def test_header_is_required():
    with pytest.raises(RecipeSyntaxError, match="line 1: a recipe starts with the line 'alloy-recipe 1'"):
        parse_recipe('A = model("a")\n')


def test_canonical_print_names_models_and_nodes_and_round_trips(sd1, tmp_path):
    for p in sd1:
        shutil.copy(p, tmp_path / p.name)
    text = (
        "alloy-recipe 1\n"
        'X = model("sd1_c.safetensors")\n'
        'Y = model("sd1_a.safetensors")\n'
        'Z = model("sd1_b.safetensors")\n'
        'first = weighted_sum(Y, Z, alpha=blocks("IN00=0.3 OUT05-OUT11=1 *=0.5"))\n'
        'result = triple_sum(first, Z, X, alpha=preset("GRAD_V"), beta=1)\n'
    )
    printed, digest = canonical(text, tmp_path)
    ha, hb, hc = (
        file_sha256(str(tmp_path / n)) for n in ("sd1_a.safetensors", "sd1_b.safetensors", "sd1_c.safetensors")
    )
    lines = printed.splitlines()
    assert lines[0] == "alloy-recipe 1"
    assert lines[1] == f'A = model("sd1_a.safetensors", sha256="{ha}")'
    assert lines[2] == f'B = model("sd1_b.safetensors", sha256="{hb}")'
    assert lines[3] == f'C = model("sd1_c.safetensors", sha256="{hc}")'
    assert lines[4] == ('m1 = weighted_sum(A, B, alpha=blocks("BASE=0.5 IN00=0.3 IN01-OUT04=0.5 OUT05-OUT11=1.0"))')
    assert lines[5].startswith('merged = triple_sum(m1, B, C, alpha=blocks("BASE=0.0 IN00=1.0 IN01=0.91666')
    assert lines[5].endswith(' OUT11=1.0"), beta=1.0)')
    assert len(lines) == 6
    # print(parse(print(r))) == print(r), and the hash does not change
    again, digest2 = canonical(printed, tmp_path)
    assert again == printed and digest2 == digest


def test_defaults_are_printed_and_numbers_are_shortest_repr(sd1, tmp_path):
    for p in sd1:
        shutil.copy(p, tmp_path / p.name)
    text = (
        'alloy-recipe 1\nA = model("sd1_a.safetensors")\nB = model("sd1_b.safetensors")\n'
        'C = model("sd1_c.safetensors")\nmerged = triple_sum(A, B, C, beta=-0.0)\n'
    )
    printed, _ = canonical(text, tmp_path)
    assert printed.splitlines()[-1] == "merged = triple_sum(A, B, C, alpha=0.5, beta=0.0)"
    text2 = text.replace("beta=-0.0", "alpha=1e-05, beta=0")
    assert canonical(text2, tmp_path)[0].splitlines()[-1] == "merged = triple_sum(A, B, C, alpha=1e-05, beta=0.0)"


def test_hash_depends_on_content_not_paths(sd1, tmp_path):
    text = f'alloy-recipe 1\nA = model("{sd1[0]}")\nB = model("{sd1[1]}")\nmerged = weighted_sum(A, B, alpha=0.5)\n'
    _, digest = canonical(text, tmp_path)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(sd1[0], moved / "renamed_a.safetensors")
    shutil.copy(sd1[1], moved / "renamed_b.safetensors")
    text2 = (
        'alloy-recipe 1\nA = model("renamed_a.safetensors")\nB = model("renamed_b.safetensors")\n'
        "merged = weighted_sum(A, B, alpha=0.5)\n"
    )
    assert canonical(text2, moved)[1] == digest
    assert canonical(text.replace("0.5", "0.6"), tmp_path)[1] != digest
    swapped = f'alloy-recipe 1\nA = model("{sd1[1]}")\nB = model("{sd1[0]}")\nmerged = weighted_sum(A, B, alpha=0.5)\n'
    assert canonical(swapped, tmp_path)[1] != digest


def test_checkpoint_titles_and_missing_models(sd1, tmp_path):
    shutil.copy(sd1[0], tmp_path / "base.safetensors")
    text = 'alloy-recipe 1\nA = model("base.safetensors [0123456789]")\nmerged = weighted_sum(A, A, alpha=0.5)\n'
    printed, _ = canonical(text, tmp_path)
    assert printed.splitlines()[1].startswith('A = model("base.safetensors", sha256=')
    with pytest.raises(ModelNotFoundError, match="model not found: 'nothere.safetensors'"):
        canonical(text.replace("base.safetensors [0123456789]", "nothere.safetensors"), tmp_path)


def test_strings_are_escaped():
    node = MergeNode("weighted_sum", (ModelRef('we"ird\\name.safetensors'), ModelRef("b")), {"alpha": 0.5})
    text = print_recipe(node)
    assert 'A = model("we\\"ird\\\\name.safetensors")' in text
    assert parse_recipe(text) == node
