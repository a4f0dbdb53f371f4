"""Templates with open param("name") inputs and `recipe compose`."""

from __future__ import annotations

import pytest
import torch
from helpers import load
from test_cli import cli
from test_merge import merge

from lib_merge.errors import RecipeError
from lib_merge.recipe import parse_recipe, print_recipe
from lib_merge.recipe.compose import compose

TEMPLATE = 'alloy-recipe 1\nmerged = weighted_sum(param("base"), param("style"), alpha=param("alpha"))\n'


def test_a_template_prints_with_its_params_and_refuses_to_merge(tmp_path):
    root = parse_recipe(TEMPLATE)
    assert print_recipe(root) == TEMPLATE
    with pytest.raises(RecipeError, match="recipe has unfilled parameters: alpha, base, style"):
        merge(TEMPLATE, tmp_path / "t.safetensors")


def test_compose_fills_numbers_models_and_sub_recipes(sd1, tmp_path):
    sub = tmp_path / "style.alloy"
    sub.write_text(f'alloy-recipe 1\nmerged = add_difference(param("x"), model("{sd1[1]}"), model("{sd1[2]}"), '
                   "alpha=0.7)\n", encoding="utf-8")  # fmt: skip
    partly = compose(parse_recipe(TEMPLATE), {"base": str(sd1[0]), "style": str(sub), "alpha": "0.3"})
    printed = print_recipe(partly)
    assert 'm1 = add_difference(param("x"), B, C, alpha=0.7)' in printed  # the sub-template's param stays open
    assert "merged = weighted_sum(A, m1, alpha=0.3)" in printed
    full = compose(parse_recipe(printed), {"x": str(sd1[0])})
    assert print_recipe(full) == print_recipe(compose(parse_recipe(printed), {"x": str(sd1[0])}))
    out = load(merge(print_recipe(full), tmp_path / "c.safetensors", torch.float32).path)
    a, b, c = (load(p) for p in sd1)
    key = "model.diffusion_model.out.2.weight"
    expected = 0.7 * a[key].double() + 0.3 * (a[key].double() + 0.7 * (b[key].double() - c[key].double()))
    torch.testing.assert_close(out[key].double(), expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(RecipeError, match="unknown template parameter colour; open: alpha, base, style"):
        compose(parse_recipe(TEMPLATE), {"colour": "1"})


def test_cli_compose(sd1, tmp_path):
    template = tmp_path / "t.alloy"
    template.write_text(TEMPLATE, encoding="utf-8")
    out = tmp_path / "filled.alloy"
    proc = cli("recipe", "compose", template, "-p", "base", sd1[0], "-p", "style", sd1[1], "-p", "alpha", "0.25",
               "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "merged = weighted_sum(A, B, alpha=0.25)" in out.read_text(encoding="utf-8")
    assert cli("recipe", "print", template).stdout == TEMPLATE
    bad = cli("recipe", "compose", template, "-p", "alpha", "much")
    assert bad.returncode == 3 and "needs a number" in bad.stderr


def test_a_server_fills_templates_only_with_recipe_files_from_its_recipes_folder(tmp_path, monkeypatch):
    from lib_merge.errors import ParameterError
    from lib_merge.ui.values import filled_template

    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    recipes = tmp_path / "home" / "recipes"
    recipes.mkdir(parents=True)
    inner = 'alloy-recipe 1\nA = model("a")\nB = model("b")\nmerged = weighted_sum(A, B, alpha=0.25)\n'
    (recipes / "inner.alloy").write_text(inner)
    (tmp_path / "secret.alloy").write_text(inner)
    template = 'alloy-recipe 1\nC = model("c")\nmerged = weighted_sum(param("x"), C, alpha=0.5)\n'
    assert "alpha=0.25" in filled_template(template, ["inner.alloy"])
    for outside in (str(tmp_path / "secret.alloy"), "../../secret.alloy", "missing.alloy"):
        with pytest.raises(ParameterError, match="only a file can be read here"):
            filled_template(template, [outside])
