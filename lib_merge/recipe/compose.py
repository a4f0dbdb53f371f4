"""Filling a template's open `param("name")` inputs."""

from __future__ import annotations

import os

from lib_merge.errors import RecipeError, RecipeTypeError
from lib_merge.paths import file_in_folders
from lib_merge.recipe.limits import check_size
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef, Node, Param, open_params
from lib_merge.recipe.parse import parse_recipe, read_recipe_file


def compose(
    template: Node,
    values: dict[str, str | float | BlocksSpec],
    recipe_folder: str | None = None,
    words: bool = False,
) -> Node:
    """Each value is a number, a model path or title, or a recipe file (`.alloy`) whose result takes
    the place; a block vector fills a parameter as it is. With `recipe_folder` (a server), recipe files
    are read only from that folder. With `words` (a study's choices), text that is no number fills a
    parameter as a word (sign="mean"), which the method's declaration checks."""
    unknown = sorted(set(values) - set(open_params(template)))
    if unknown:
        raise RecipeError(
            f"unknown template parameter {', '.join(unknown)}; open: {', '.join(open_params(template)) or 'none'}"
        )

    def as_input(name: str) -> Node:
        value = str(values[name])
        if not value.endswith(".alloy"):
            return ModelRef(value)
        if recipe_folder is not None:
            return parse_recipe(read_recipe_file(str(file_in_folders(value, [recipe_folder]))))
        return parse_recipe(read_recipe_file(value)) if os.path.isfile(value) else ModelRef(value)

    def as_number(name: str) -> float | str | BlocksSpec:
        value = values[name]
        if isinstance(value, BlocksSpec):
            return value
        try:
            return float(value)
        except ValueError:
            if words:
                return str(value)
            raise RecipeTypeError(f"template parameter {name} needs a number, not {value!r}") from None

    def fill(node: Node) -> Node:
        if isinstance(node, Param):
            return as_input(node.name) if node.name in values else node
        if isinstance(node, ModelRef):
            return node
        params = {
            k: (as_number(v.name) if isinstance(v, Param) and v.name in values else v) for k, v in node.params.items()
        }
        return MergeNode(node.method, tuple(fill(i) for i in node.inputs), params)

    filled = fill(template)
    check_size(filled)
    return filled
