"""MergeSettings -> recipe: the one place every surface's choices become a recipe."""

from __future__ import annotations

import pytest

from lib_merge.errors import InvalidComboError, ParameterError
from lib_merge.recipe import print_recipe
from lib_merge.recipe.form import MergeSettings, build_recipe
from lib_merge.recipe.nodes import BlocksSpec


def test_scalar_settings_print_as_the_expected_recipe():
    root = build_recipe(MergeSettings("a.safetensors", "b.safetensors", "twice", "c.safetensors", 0.2, 0.7))
    assert print_recipe(root).splitlines()[-1] == "merged = sum_twice(A, B, C, alpha=0.2, beta=0.7)"


def test_block_settings_keep_the_slider_as_default():
    root = build_recipe(MergeSettings("a", "b", "ws", alpha=0.3, blocks="OUT*=1"))
    assert root.params["alpha"] == BlocksSpec("OUT*=1", default=0.3)
    root = build_recipe(MergeSettings("a", "b", "ws", preset="GRAD_V"))
    assert root.params["alpha"] == BlocksSpec("GRAD_V", preset="GRAD_V")


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (MergeSettings("a", "b", "add_difference"), InvalidComboError, "needs models A, B, C"),
        (MergeSettings("a", "b", "ws", c="c"), InvalidComboError, "model C is not used"),
        (MergeSettings("a", "b", "ws", beta=0.1), ParameterError, "beta is not used by mode weighted_sum"),
        (MergeSettings("a", "b", "ws", blocks="*=1", preset="GRAD_V"), ParameterError, "not both"),
    ],
)
def test_impossible_settings_are_refused(settings, error, message):
    with pytest.raises(error, match=message):
        build_recipe(settings)
