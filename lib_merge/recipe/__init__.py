"""Recipes: the text format, its nodes, canonical printing and the hash."""

from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef, Node, primary_model, walk_merges, walk_models
from lib_merge.recipe.parse import HEADER, parse_recipe, read_recipe_file
from lib_merge.recipe.printer import print_recipe, recipe_hash
from lib_merge.recipe.vectors import BlockVector, format_vector, parse_vector

__all__ = [
    "HEADER",
    "BlockVector",
    "BlocksSpec",
    "MergeNode",
    "ModelRef",
    "Node",
    "format_vector",
    "parse_recipe",
    "parse_vector",
    "read_recipe_file",
    "primary_model",
    "print_recipe",
    "recipe_hash",
    "walk_merges",
    "walk_models",
]
