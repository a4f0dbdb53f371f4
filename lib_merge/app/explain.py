"""Explain a merge for the Analysis tab, the command line and the HTTP API: the fit of
analysis/explain.py, its table, its JSON and a recipe of the fitted block weights that the Merge tab's
recipe box (or `merge RECIPE`) takes and that, merged, gives M back."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lib_merge.analysis.explain import THRESHOLD, ExplainInputs, Explanation, explain, percent
from lib_merge.app.ports import Host
from lib_merge.arch.blocks import SCHEMAS, VAE_SLOT
from lib_merge.errors import ParameterError
from lib_merge.methods import MODE_ALIASES
from lib_merge.recipe.form import MergeSettings, build_recipe
from lib_merge.recipe.printer import print_recipe
from lib_merge.recipe.vectors import BlockVector, format_vector

Step = Callable[[int, int], None]
DECIMALS = 4  # of the recipe's block weights
COLUMNS = ["block", "keys", "alpha", "explained %", "note"]


@dataclass
class ExplainRequest:
    """Model M and its candidate parents: checkpoint titles (the tab, HTTP) or files (the command line)."""

    m: str = ""
    a: str = ""
    b: str = ""
    c: str | None = None
    mode: str = "auto"  # auto (with C: the better of the two), weighted_sum, add_difference


@dataclass
class ExplainOutcome:
    explanation: Explanation
    recipe: str  # the fitted merge as recipe text, its models named as the request named them


def explain_checkpoints(request: ExplainRequest, host: Host, step: Step | None = None) -> ExplainOutcome:
    """The host's checkpoints explained; the recipe names them by their titles, as the Merge tab does."""
    _check(request)
    files = [host.resolve_checkpoint(name) if name else None for name in (request.m, request.a, request.b, request.c)]
    return _explained(request, files, (request.a, request.b, request.c), step)


def explain_files(request: ExplainRequest, models_dir: str | None = None, step: Step | None = None) -> ExplainOutcome:
    """Files (absolute, or relative to the models folder as recipes resolve them); the recipe names them
    as `merge RECIPE` with the same --models-dir finds them."""
    from lib_merge.engine.bind import display_path, resolve_model_path

    _check(request)
    files = [resolve_model_path(p, models_dir) if p else None for p in (request.m, request.a, request.b, request.c)]
    names = tuple(display_path(f, models_dir) if f else None for f in files[1:])
    return _explained(request, files, names, step)


def _check(request: ExplainRequest) -> None:
    if not request.m or not request.a or not request.b:
        raise ParameterError("choose the models M (the one to explain), A and B")


def _explained(request: ExplainRequest, files: list, names: tuple, step: Step | None) -> ExplainOutcome:
    mode = MODE_ALIASES.get(request.mode, request.mode) if request.mode != "auto" else "auto"
    m, a, b, c = files
    explanation = explain(ExplainInputs(m, a, b, c, mode), step)
    return ExplainOutcome(explanation, recipe_text(explanation, *names))


def recipe_text(explanation: Explanation, a: str, b: str, c: str | None = None) -> str:
    """The fitted merge as a recipe: the chosen mode with the block weights rounded to DECIMALS."""
    schema = SCHEMAS[explanation.schema]
    fitted = {fit.block: round(fit.alpha, DECIMALS) + 0.0 for fit in explanation.blocks}
    values = tuple(fitted.get(slot, 0.0) for slot in schema.slots)  # a slot without keys changes nothing
    vae = fitted.get(VAE_SLOT)
    if vae == (0.0 if schema.vae_keeps_a else values[0]):
        vae = None  # the VAE follows its default (BASE's weight, or A for Flux)
    blocks = format_vector(BlockVector(schema.id, values, vae), schema)
    add = explanation.mode == "add_difference"
    settings = MergeSettings(a=a, b=b, c=c if add else None, mode=explanation.mode, blocks=blocks)
    return print_recipe(build_recipe(settings))


def rows(explanation: Explanation) -> list[list]:
    """The table: block, keys, alpha (4 decimals), explained % (2 decimals, rounded down), note."""
    return [
        [fit.block, fit.keys, round(fit.alpha, DECIMALS) + 0.0, share_percent(fit.explained), fit.note]
        for fit in explanation.blocks
    ]


def share_percent(share: float) -> float:
    """A share in % with 2 decimals, rounded down (a fit of 99.999 % is not shown as a perfect 100)."""
    return math.floor(share * 10000 + 1e-6) / 100


def summary(explanation: Explanation) -> str:
    """The verdict, and the other mode's share when both were fitted, and keys left out."""
    lines = [explanation.verdict()]
    others = {k: v for k, v in explanation.alternatives.items() if k != explanation.mode}
    for mode, share in others.items():
        lines.append(f"As {mode.replace('_', ' ')} the best fit explains {percent(share)}.")
    if explanation.skipped:
        lines.append(f"{explanation.skipped} keys of M are not in every parent and were left out.")
    return " ".join(lines)


def as_json(outcome: ExplainOutcome) -> dict:
    """The answer of `explain --json` and POST /alloy/v1/explain."""
    e = outcome.explanation
    return {
        "mode": e.mode,
        "explained": e.explained,
        "blocks": {
            fit.block: {"alpha": fit.alpha, "explained": fit.explained, "keys": fit.keys, "note": fit.note}
            for fit in e.blocks
        },
        "recipe": outcome.recipe,
        "is_merge": e.is_merge,
        "verdict": e.verdict(),
        "threshold": THRESHOLD,
        "alternatives": dict(e.alternatives),
        "m": e.m,
        "a": e.a,
        "b": e.b,
        "c": e.c,
        "architecture": e.architecture,
        "skipped": e.skipped,
    }
