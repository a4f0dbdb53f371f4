"""Filling a template's open `param("name")` inputs (SPEC §5.8)."""

from __future__ import annotations

import os

from lib_merge.errors import RecipeError, RecipeTypeError
from lib_merge.recipe.nodes import MergeNode, ModelRef, Node, Param, open_params
from lib_merge.recipe.parse import parse_recipe


def compose(template: Node, values: dict[str, str]) -> Node:
    """Each value is a number, a model path or title, or a recipe file whose result takes the place."""
    unknown = sorted(set(values) - set(open_params(template)))
    if unknown:
        raise RecipeError(
            f"unknown template parameter {', '.join(unknown)}; open: {', '.join(open_params(template)) or 'none'}"
        )

    def as_input(name: str) -> Node:
        value = values[name]
        if value.endswith(".alloy") and os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                return parse_recipe(f.read())
        return ModelRef(value)

    def as_number(name: str) -> float:
        try:
            return float(values[name])
        except ValueError:
            raise RecipeTypeError(f"template parameter {name} needs a number, not {values[name]!r}") from None

    def fill(node: Node) -> Node:
        if isinstance(node, Param):
            return as_input(node.name) if node.name in values else node
        if isinstance(node, ModelRef):
            return node
        params = {
            k: (as_number(v.name) if isinstance(v, Param) and v.name in values else v) for k, v in node.params.items()
        }
        return MergeNode(node.method, tuple(fill(i) for i in node.inputs), params)

    return fill(template)
