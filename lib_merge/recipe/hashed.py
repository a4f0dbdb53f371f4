"""A bound recipe with every model's sha256: its canonical text and its hash, made once.

Results carry this object from the merge to the name, the metadata, the history row and a
later save, so no layer prints a recipe only to parse it back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lib_merge.recipe.nodes import ModelRef, Node, walk_models
from lib_merge.recipe.printer import print_recipe, recipe_hash

ROLES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def role_name(index: int) -> str:
    """A model's role by its position in the recipe: A, B, C, … then #27, #28, …"""
    return ROLES[index] if index < len(ROLES) else f"#{index + 1}"


@dataclass(frozen=True)
class HashedRecipe:
    root: Node  # model paths as displayed (relative to the models folder where they lie there), sha256 filled
    text: str = field(compare=False)
    digest: str

    @classmethod
    def of(cls, root: Node) -> HashedRecipe:
        return cls(root, print_recipe(root), recipe_hash(root))

    @property
    def models(self) -> list[ModelRef]:
        return walk_models(self.root)

    def models_column(self) -> str:
        """History's models column: 'A=base.safetensors [6ce0161689];B=…'."""
        return ";".join(
            f"{role_name(i)}={os.path.basename(ref.path)} [{(ref.sha256 or '')[:10]}]"
            for i, ref in enumerate(self.models)
        )


class CarriesRecipe:
    """For results with a `recipe: HashedRecipe`: its hash and text under the names surfaces use."""

    recipe: HashedRecipe

    @property
    def recipe_hash(self) -> str:
        return self.recipe.digest

    @property
    def recipe_text(self) -> str:
        return self.recipe.text
