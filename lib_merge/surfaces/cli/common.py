"""Small helpers the commands share: reading a recipe file, warnings, output checks."""

from __future__ import annotations

import sys


def load_recipe(path: str):
    from lib_merge.recipe import parse_recipe, read_recipe_file

    return parse_recipe(read_recipe_file(path))


def canonical(root, models_dir):
    from lib_merge.engine.bind import canonical_recipe

    return canonical_recipe(root, models_dir)


def check_new_output(path: str, overwrite: bool, writes: str | None = None) -> None:
    """A new output file: its folder exists, it is new unless --overwrite, and a model's (`writes`: its
    format) ending matches its format."""
    from lib_merge.io.tempfiles import check_new_output as check

    check(path, [], overwrite, writes)


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def count_progress(args, label: str, unit: str):
    """A progress bar of (done, total) counts on a terminal, made at the first update; None otherwise."""
    if getattr(args, "no_progress", False) or getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, file=sys.stderr, leave=False, unit=unit, desc=label)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
