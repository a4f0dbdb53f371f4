"""Methods describe themselves through their signatures; everything else reads the registry."""

from __future__ import annotations

import typing
from typing import Annotated

import pytest
import torch

from lib_merge.app.plots.plan import PlanContext, XYZPlan, expand
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import RecipeTypeError
from lib_merge.methods import METHODS, get_method, names_of_kind
from lib_merge.methods.registry import SCALAR, Bounds, Seed, Sign, Weight, merge_method
from lib_merge.recipe import parse_recipe, print_recipe
from lib_merge.recipe.form import MergeSettings, MethodSettings, build_method_recipe, build_recipe


def test_a_decorated_function_becomes_a_method_spec():
    @merge_method("Demo", "method", at_least=2)
    def demo(
        base,
        *models,
        alpha: Weight = 0.7,
        eps: Annotated[float, Bounds(0.0, 1.0, enforce=True), SCALAR] = 0.1,
        seed: Seed = 3,
        sign: Sign = "count",
        flag: bool = False,
        key: str,
        s_min: float,
    ):
        return base

    spec = demo.method_spec
    assert (spec.name, spec.label, spec.kind) == ("demo", "Demo", "method")
    assert spec.inputs == ("base", "M1", "M2") and spec.variadic and spec.needs_key
    assert [p.name for p in spec.params] == ["alpha", "eps", "seed", "sign", "flag"]  # key, s_min: engine's
    alpha, eps, seed, sign, flag = spec.params
    assert alpha.default == 0.7 and alpha.vector and (alpha.low, alpha.high, alpha.enforce) == (-1.0, 2.0, False)
    assert eps.default == 0.1 and not eps.vector and (eps.low, eps.high, eps.enforce) == (0.0, 1.0, True)
    assert seed.integer and seed.default == 3 and seed.high == 2**63 - 1 and not seed.vector
    assert sign.choices == ("sum", "count", "mean") and sign.default == "count"
    assert flag.boolean and flag.default == 0.0


def test_a_parameter_type_no_recipe_can_hold_is_refused_at_import():
    with pytest.raises(TypeError, match="parameter 'x' has a type no recipe can hold"):

        @merge_method("Bad", "op")
        def bad(a, *, x: list = None):  # noqa: B006
            return a


def test_every_registered_function_matches_its_spec():
    """The spec's parameters are exactly the function's keyword parameters with defaults, with those defaults
    (those the engine passes, like a pre-pass's prepared value, are not the user's)."""
    import inspect

    from lib_merge.methods.registry import ENGINE_ARGUMENTS

    for name, spec in METHODS.items():
        signature = inspect.signature(spec.fn)
        defaults = {
            p.name: p.default
            for p in signature.parameters.values()
            if p.default is not p.empty and p.name not in ENGINE_ARGUMENTS
        }
        assert [p.name for p in spec.params] == list(defaults), name
        for p in spec.params:
            expected = defaults[p.name]
            assert p.default == (float(expected) if isinstance(expected, bool) else expected), (name, p.name)
        hints = typing.get_type_hints(spec.fn, include_extras=True)
        assert all(p.name in hints for p in spec.params), name


def test_kinds_split_the_modes_methods_and_ops():
    assert names_of_kind("mode") == ("weighted_sum", "add_difference", "triple_sum", "sum_twice")
    assert {"ties", "dare", "slerp", "n_average", "task_arithmetic"} <= set(names_of_kind("method"))
    assert {"cast", "clip", "adjust", "lora", "rebasin"} == set(names_of_kind("op"))
    with pytest.raises(RecipeTypeError) as error:
        get_method("nope", kind="mode")
    assert str(error.value) == (
        "unknown mode 'nope'; modes: weighted_sum (Weight sum), add_difference (Add difference), "
        "triple_sum (Triple sum), sum_twice (Sum twice)"
    )
    with pytest.raises(RecipeTypeError, match=r"unknown method 'cast'; methods: ties, dare, dare_ties, della"):
        build_method_recipe(MethodSettings("a", ["b"], "cast"))
    with pytest.raises(RecipeTypeError, match="unknown mode 'adjust'"):
        build_recipe(MergeSettings("a", "b", mode="adjust"))


@pytest.mark.parametrize("seed", [0, 9007199254740993, 2**63 - 1])
def test_seeds_stay_exact_integers_from_form_to_recipe_and_back(seed):
    root = build_method_recipe(MethodSettings("a", ["b"], "dare", {"seed": seed}))
    assert root.params["seed"] == seed and type(root.params["seed"]) is int
    text = print_recipe(root)
    assert f"seed={seed})" in text
    again = parse_recipe(text)
    assert again.params["seed"] == seed and type(again.params["seed"]) is int
    assert print_recipe(again) == text


def test_a_seed_past_the_range_is_refused_before_the_merge(sd1):
    from lib_merge.engine.bind import bind_recipe

    text = f'alloy-recipe 1\nA = model("{sd1[0]}")\nB = model("{sd1[1]}")\nmerged = dare(A, B, seed={2**63})\n'
    with pytest.raises(Exception, match=rf"seed must lie in \[0, {2**63 - 1}\], not {2**63}$"):
        bind_recipe(parse_recipe(text))


def test_the_seed_reaches_the_method_exact(monkeypatch, sd1, tmp_path):
    from lib_merge.engine.to_file import SaveOptions, merge_to_file
    from lib_merge.methods import calc

    seen = set()
    original = calc.key_generator

    def spy(seed, stream, key):
        seen.add(seed)
        return original(seed, stream, key)

    monkeypatch.setattr(calc, "key_generator", spy)
    seed = 9007199254740993
    root = build_recipe(MergeSettings(str(sd1[0]), str(sd1[0]), calc="random", alpha=0.1, seed=seed))
    result = merge_to_file(root, SaveOptions(str(tmp_path / "r.safetensors"), torch.float32))
    assert seen == {seed} and f"seed={seed}" in result.recipe_text


def test_xyz_beta_default_is_the_methods_own():
    """Triple sum with a pinpoint X axis and a beta Y axis: the blocks not pinned keep the beta a plain
    triple-sum merge uses (the registry's 0.25), not a copied 0.5."""
    plan = XYZPlan.from_dict(
        {
            "x": {"type": "pinpoint_blocks", "values": "IN01"},
            "y": {"type": "beta", "values": "0.9"},
            "merge": {"a": "a", "b": "b", "c": "c", "mode": "triple_sum"},
        }
    )
    default = get_method("triple_sum").param("beta").default
    assert default == 0.25
    (cell,) = expand(plan, PlanContext(SCHEMAS["sd1"]))
    values = dict(zip(SCHEMAS["sd1"].slots, map(float, cell.root.params["beta"].spec.split(",")), strict=True))
    assert values.pop("IN01") == 0.9
    assert set(values.values()) == {default}
