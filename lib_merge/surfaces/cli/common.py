"""Small helpers the commands share: reading a recipe file, warnings, output checks."""

from __future__ import annotations

import os
import sys


def load_recipe(path: str):
    from lib_merge.recipe import parse_recipe, read_recipe_file

    return parse_recipe(read_recipe_file(path))


def canonical(root, models_dir):
    from lib_merge.engine.bind import canonical_recipe

    return canonical_recipe(root, models_dir)


def check_new_output(path: str, overwrite: bool) -> None:
    from lib_merge.errors import OutputExistsError, UnsafePathError

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UnsafePathError(f"output folder does not exist: {folder}")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or use --overwrite")


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)
