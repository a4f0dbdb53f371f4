"""Scorer plugins: `<user-data>/scorers/NAME.py` defining `score(images, prompts) -> list[float]` (higher is
better), named in a study as "plugin:NAME". Only that folder is read: a name is a plain word, never a path,
and a file there that links elsewhere is refused. A request never names code to run."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path

from lib_merge.errors import ParameterError
from lib_merge.paths import inside_folder, user_data_dir

PLUGIN_PREFIX = "plugin:"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ScoreFunction = Callable[[list, list[str]], list[float]]


def plugin_folder() -> Path:
    return user_data_dir() / "scorers"


def plugin_path(name: str) -> Path:
    """The plugin's file, checked before anything runs: a plain name, a file inside the scorers folder."""
    if not _NAME.match(name or ""):
        raise ParameterError(f"scorer plugin name {name!r}: use letters, digits, - and _ only (no path)")
    folder = plugin_folder()
    path = folder / f"{name}.py"
    if not path.is_file() or not inside_folder(str(path), str(folder)):
        found = sorted(p.stem for p in folder.glob("*.py")) if folder.is_dir() else []
        raise ParameterError(
            f"no scorer plugin {name!r} in {folder}; found: {', '.join(found) or 'none'} "
            "(a plugin is NAME.py defining score(images, prompts) -> list of numbers)"
        )
    return path


def load_plugin(name: str) -> ScoreFunction:
    """The plugin's `score` function (its module is run once, when the study starts)."""
    path = plugin_path(name)
    spec = importlib.util.spec_from_file_location(f"alloy_scorer_{name}", os.fspath(path))
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's code: its failure is one line
        raise ParameterError(f"scorer plugin {name} ({path}) failed to load: {type(e).__name__}: {e}") from None
    score = getattr(module, "score", None)
    if not callable(score):
        raise ParameterError(f"scorer plugin {name} ({path}) defines no score(images, prompts) function")
    return score
