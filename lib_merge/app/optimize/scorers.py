"""A study's objectives: which scorer, and whether higher or lower is better. Several objectives give a
Pareto front instead of one best trial."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib_merge.app.optimize.plugins import PLUGIN_PREFIX, ScoreFunction, load_plugin, plugin_path
from lib_merge.errors import ParameterError

DIRECTIONS = ("maximize", "minimize")
HUMAN = "human"  # a person's choices between two trials' images


@dataclass(frozen=True)
class Objective:
    scorer: str  # a built-in scorer's name, or "plugin:NAME"
    direction: str = "maximize"


@dataclass(frozen=True)
class BuiltinScorer:
    """A scorer that ships with Alloy: `load(settings)` gives its score function (its weights read once)."""

    name: str
    about: str
    load: Callable[[Any], ScoreFunction]
    check: Callable[[Any], None]  # raises when its weights are missing and may not be fetched


def parse_objectives(value: Any, builtins: dict[str, BuiltinScorer], settings: Any = None) -> list[Objective]:
    """`"aesthetic"`, `"plugin:NAME"`, `{"scorer": …, "direction": "minimize"}`, or a list of them; every
    scorer is known and every plugin file is there before the study starts."""
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > 8:
        raise ParameterError('"scorer" takes one to eight objectives')
    objectives = []
    for item in items:
        if isinstance(item, str):
            objective = Objective(item)
        elif isinstance(item, dict) and set(item) <= {"scorer", "direction"} and isinstance(item.get("scorer"), str):
            direction = item.get("direction", "maximize")
            if direction not in DIRECTIONS:
                raise ParameterError(f"objective {item['scorer']}: direction must be maximize or minimize")
            objective = Objective(item["scorer"], direction)
        else:
            raise ParameterError('an objective is a scorer name or {"scorer": NAME, "direction": "maximize"}')
        _check_scorer(objective.scorer, builtins, settings)
        objectives.append(objective)
    if len({o.scorer for o in objectives}) != len(objectives):
        raise ParameterError("a scorer is named twice")
    if any(o.scorer == HUMAN for o in objectives) and objectives != [Objective(HUMAN)]:
        raise ParameterError('"human" is the only objective of its study, and its direction is maximize')
    return objectives


def _check_scorer(name: str, builtins: dict[str, BuiltinScorer], settings: Any) -> None:
    if name == HUMAN:
        return
    if name.startswith(PLUGIN_PREFIX):
        plugin_path(name[len(PLUGIN_PREFIX) :])
    elif name not in builtins:
        known = [*builtins, HUMAN, "plugin:NAME"]
        raise ParameterError(f"unknown scorer {name!r}; use one of {', '.join(known)}")
    else:
        builtins[name].check(settings)


def load_scorer(name: str, builtins: dict[str, BuiltinScorer], settings: Any) -> ScoreFunction:
    if name.startswith(PLUGIN_PREFIX):
        return load_plugin(name[len(PLUGIN_PREFIX) :])
    return builtins[name].load(settings)


def checked_scores(name: str, scores: Any, count: int) -> list[float]:
    """A scorer's answer as `count` finite numbers, or one line saying what it gave instead."""
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise ParameterError(f"scorer {name} must return a list of numbers, not {type(scores).__name__}") from None
    if len(values) != count:
        raise ParameterError(f"scorer {name} returned {len(values)} scores for {count} images")
    if not all(math.isfinite(v) for v in values):
        raise ParameterError(f"scorer {name} returned a score that is not a finite number")
    return values
