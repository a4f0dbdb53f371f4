"""File names of merges."""

from __future__ import annotations

import pytest

from lib_merge.app.naming import MAX_STEM, auto_name, custom_file_name, sanitize
from lib_merge.errors import UnsafeNameError
from lib_merge.recipe import parse_recipe

HASH = "1a2b3c4d5e" + "0" * 54


def recipe(body: str, a: str = "base.safetensors", b: str = "fooMix v2.safetensors") -> str:
    return f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nC = model("c.safetensors")\nmerged = {body}\n'


def test_auto_name_follows_the_spec_pattern():
    assert (
        auto_name(parse_recipe(recipe("weighted_sum(A, B, alpha=0.3)")), HASH) == "base_x_fooMix_v2_ws_a0.3-1a2b3c4d5e"
    )
    name = auto_name(parse_recipe(recipe("sum_twice(A, B, C, alpha=0.5, beta=0.25)")), HASH)
    assert name == "base_x_fooMix_v2_x_c_twice_a0.5_b0.25-1a2b3c4d5e"
    name = auto_name(parse_recipe(recipe('weighted_sum(A, B, alpha=blocks("*=0.5"))')), HASH)
    assert name == "base_x_fooMix_v2_ws_a_blocks-1a2b3c4d5e"
    name = auto_name(parse_recipe(recipe('adjust(weighted_sum(A, B, alpha=0.3), "0,0,0,0,1")')), HASH)
    assert name == "base_x_fooMix_v2_ws_a0.3-1a2b3c4d5e"


def test_long_names_keep_the_hash_and_reserved_names_get_an_underscore():
    long = "x" * 300 + ".safetensors"
    name = auto_name(parse_recipe(recipe("weighted_sum(A, B, alpha=0.3)", a=long)), HASH)
    assert len(name) == MAX_STEM and name.endswith("-1a2b3c4d5e")
    assert custom_file_name("CON") == "CON_.safetensors"
    assert custom_file_name("nul.ckpt", "ckpt") == "nul_.ckpt"


def test_sanitising():
    assert sanitize("my merge (v2), [final]!") == "my_merge_v2_final"
    assert sanitize("..émile—mix..") == "émile_mix"
    assert custom_file_name("mix.ckpt", "safetensors") == "mix.safetensors"
    assert custom_file_name("mix.v2") == "mix.v2.safetensors"


@pytest.mark.parametrize("bad", ["x/../y", "..", ".", ".hidden", "a\\b", "C:evil", "", "   ", "???"])
def test_custom_names_must_be_plain_file_names(bad):
    with pytest.raises(UnsafeNameError):
        custom_file_name(bad)
