"""Importing SuperMerger's `mergehistory.csv` into Alloy's history.

A server (the WebUI, the standalone app) reads only a file named `mergehistory.csv` inside the
folders it allows (`paths.file_in_folders`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lib_merge.app.history.log import Warn, append_history
from lib_merge.app.history.rows import RowDraft
from lib_merge.errors import ParameterError

FILE_NAME = "mergehistory.csv"


def import_supermerger(source: Path, path: Path | None = None, warn: Warn | None = None) -> tuple[int, list[str]]:
    """Append the rows of SuperMerger's mergehistory.csv (as settings, with a recipe where one
    can be written) to Alloy's history; returns (rows imported, rows skipped with reasons)."""
    from lib_merge.recipe import print_recipe
    from lib_merge.recipe.form import MergeSettings, build_recipe

    try:
        with open(source, encoding="utf-8", newline="") as f:
            records = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ParameterError(f"cannot read SuperMerger history {source}: {e}") from None
    imported, skipped = 0, []
    for n, rec in enumerate(records, 2):
        rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items() if isinstance(v, str) or v is None}
        label = rec.get("mode", "").split(":")[0].strip().lower()
        mode = _mode_named(label)
        if mode is None or not rec.get("model A"):
            skipped.append(f"{source.name} line {n} skipped: mode {rec.get('mode', '')!r} or model A missing")
            continue
        use_mbw = rec.get("use MBW", "").lower() == "true"
        settings = {
            "a": rec["model A"], "b": rec.get("model B") or None, "c": rec.get("model C") or None, "mode": mode,
            "alpha": _number(rec.get("alpha")), "beta": _number(rec.get("beta")), "use_mbw": use_mbw,
            "blocks": rec.get("weights alpha") if use_mbw else None,
            "imported_from": f"SuperMerger id {rec.get('ID', '?')} ({rec.get('time', '')})",
        }  # fmt: skip
        try:
            uses = MergeSettings(settings["a"], settings["b"] or "", mode, settings["c"], settings["alpha"])
            recipe = print_recipe(build_recipe(uses)) if settings["b"] else ""
        except Exception:  # noqa: BLE001 - the settings are kept even when no recipe can be written
            recipe = ""
        models = ";".join(f"{r}={settings[r.lower()]}" for r in "ABC" if settings[r.lower()])
        append_history(RowDraft(rec.get("name", ""), "", models, settings, "not saved", recipe), path, warn)
        imported += 1
    return imported, skipped


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _mode_named(label: str) -> str | None:
    """Our mode of SuperMerger's mode name ("Weight sum"), or None."""
    from lib_merge.errors import RecipeTypeError
    from lib_merge.methods import get_method

    try:
        return get_method(label, kind="mode").name if label else None
    except RecipeTypeError:
        return None
