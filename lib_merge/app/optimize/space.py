"""A study's search space: for each open `param("name")` of the recipe template, a range, a list of
choices, or a block vector (one value per group of slots, or a smooth curve through a few knots).

The space is read and checked here before anything runs; Optuna draws the values (`suggest`), and
`recipe_values` turns one trial's draws into what `compose` fills the template with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import ParameterError
from lib_merge.recipe.nodes import BlocksSpec

SPACE_KEYS = {"low", "high", "step", "log", "choices", "blocks", "groups", "knots"}
MAX_KNOTS = 64


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float | None = None
    log: bool = False


@dataclass(frozen=True)
class Choices:
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class Blocks:
    """A block vector: `groups` (one value each, slots named by the schema) or `knots` (values at evenly
    spaced points along the slots, joined by straight lines); each value in [low, high]."""

    groups: tuple[tuple[str, ...], ...] = ()
    knots: int = 0
    low: float = 0.0
    high: float = 1.0


Dimension = Range | Choices | Blocks


@dataclass
class SearchSpace:
    dimensions: dict[str, Dimension] = field(default_factory=dict)

    def check_against(self, open_names: list[str], schema: BlockSchema | None) -> None:
        """Every input of the space is an open parameter of the template, and block groups name the schema's
        slots; one line naming what is wrong otherwise."""
        unknown = sorted(set(self.dimensions) - set(open_names))
        if unknown:
            raise ParameterError(
                f"space input {', '.join(unknown)} is not an open param() of the recipe; open: "
                + (", ".join(open_names) or "none")
            )
        missing = sorted(set(open_names) - set(self.dimensions))
        if missing:
            raise ParameterError(f"the recipe's param() {', '.join(missing)} has no range in the space")
        for name, dim in self.dimensions.items():
            if isinstance(dim, Blocks):
                if schema is None:
                    raise ParameterError(f"space input {name}: block vectors need a model with blocks (SD1, SD2, SDXL)")
                for group in dim.groups:
                    for slot in group:
                        if slot not in schema.slots:
                            raise ParameterError(
                                f"space input {name}: no block {slot!r} in {schema.label}; blocks: {schema.describe()}"
                            )

    def suggest(self, trial, schema: BlockSchema | None) -> dict[str, Any]:
        """One trial's draws, by Optuna parameter name (a block vector draws one number per group or knot)."""
        drawn: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, Range):
                drawn[name] = trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)
            elif isinstance(dim, Choices):
                drawn[name] = trial.suggest_categorical(name, list(dim.choices))
            else:
                for label in block_dimension_names(name, dim, schema):
                    drawn[label] = trial.suggest_float(label, dim.low, dim.high)
        return drawn

    def recipe_values(self, drawn: dict[str, Any], schema: BlockSchema | None) -> dict[str, Any]:
        """The values `compose` fills the template with: numbers, choices, and block vectors as BlocksSpec."""
        values: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, Blocks):
                labels = block_dimension_names(name, dim, schema)
                values[name] = BlocksSpec(tuple(block_vector(dim, [drawn[lb] for lb in labels], schema)))
            else:
                values[name] = drawn[name]
        return values

    def grid(self, schema: BlockSchema | None, points: int = 5) -> dict[str, list]:
        """The grid sampler's values: each range's steps (or `points` evenly spaced), each choice list."""
        grid: dict[str, list] = {}
        for name, dim in self.dimensions.items():
            if isinstance(dim, Choices):
                grid[name] = list(dim.choices)
                continue
            low, high, step = (dim.low, dim.high, getattr(dim, "step", None))
            if step:
                count = int(math.floor((high - low) / step + 1e-9)) + 1
                values = [round(low + i * step, 12) for i in range(count)]
            else:
                values = [low + (high - low) * i / (points - 1) for i in range(points)]
            labels = block_dimension_names(name, dim, schema) if isinstance(dim, Blocks) else [name]
            for label in labels:
                grid[label] = values
        return grid


def block_dimension_names(name: str, dim: Blocks, schema: BlockSchema | None) -> list[str]:
    """Optuna's names of a block vector's numbers: `w[IN00+IN01]` per group (`w[rest]` for the slots no
    group names), `w@k0`… per knot."""
    if dim.knots:
        return [f"{name}@k{i}" for i in range(dim.knots)]
    names = [f"{name}[{'+'.join(group)}]" for group in dim.groups]
    if schema is not None and _rest(dim, schema):
        names.append(f"{name}[rest]")
    return names


def block_vector(dim: Blocks, numbers: list[float], schema: BlockSchema | None) -> list[float]:
    """One value per slot of the schema from a group's or a knot's numbers."""
    assert schema is not None  # checked by check_against
    slots = schema.slots
    if dim.knots:
        if dim.knots == 1:
            return [numbers[0]] * len(slots)
        out = []
        for i in range(len(slots)):
            where = i * (dim.knots - 1) / (len(slots) - 1)
            left = min(int(where), dim.knots - 2)
            part = where - left
            out.append(numbers[left] * (1 - part) + numbers[left + 1] * part)
        return out
    value_of = {slot: numbers[g] for g, group in enumerate(dim.groups) for slot in group}
    rest = numbers[len(dim.groups)] if _rest(dim, schema) else None
    return [value_of.get(slot, rest) for slot in slots]


def _rest(dim: Blocks, schema: BlockSchema) -> list[str]:
    named = {slot for group in dim.groups for slot in group}
    return [slot for slot in schema.slots if slot not in named]


def parse_space(data: Any) -> SearchSpace:
    """The space as JSON gives it: `{"name": {"low", "high", "step"?, "log"?} | {"choices": [...]} |
    {"blocks": true, "groups": [[slot, ...], ...] | "knots": K, "low"?, "high"?}}`."""
    if not isinstance(data, dict) or not data:
        raise ParameterError('"space" must be an object of input name -> range, choices or blocks')
    space = SearchSpace()
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise ParameterError(f'space input {name}: give an object such as {{"low": 0, "high": 1}}')
        unknown = sorted(set(spec) - SPACE_KEYS)
        if unknown:
            raise ParameterError(f"space input {name}: unknown field {', '.join(unknown)}")
        space.dimensions[str(name)] = _dimension(str(name), spec)
    return space


def _dimension(name: str, spec: dict) -> Dimension:
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices or len(choices) > 1000:
            raise ParameterError(f"space input {name}: choices must be a list of 1 to 1000 values")
        if not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices):
            raise ParameterError(f"space input {name}: choices must be numbers or words")
        if len(set(choices)) != len(choices):
            raise ParameterError(f"space input {name}: a choice is listed twice")
        return Choices(tuple(choices))
    if spec.get("blocks") is not None:
        if spec["blocks"] is not True:
            raise ParameterError(f'space input {name}: "blocks" must be true')
        low, high = _number(name, spec, "low", 0.0), _number(name, spec, "high", 1.0)
        _ordered(name, low, high)
        if ("groups" in spec) == ("knots" in spec):
            raise ParameterError(f'space input {name}: a block vector takes either "groups" or "knots"')
        if "knots" in spec:
            knots = spec["knots"]
            if isinstance(knots, bool) or not isinstance(knots, int) or not 1 <= knots <= MAX_KNOTS:
                raise ParameterError(f"space input {name}: knots must be a whole number from 1 to {MAX_KNOTS}")
            return Blocks(knots=knots, low=low, high=high)
        groups = spec["groups"]
        valid = (
            isinstance(groups, list)
            and groups
            and all(isinstance(g, list) and g and all(isinstance(s, str) for s in g) for g in groups)
        )
        if not valid:
            raise ParameterError(f"space input {name}: groups must be a list of lists of block names")
        flat = [slot for group in groups for slot in group]
        if len(set(flat)) != len(flat):
            raise ParameterError(f"space input {name}: a block stands in two groups")
        return Blocks(groups=tuple(tuple(g) for g in groups), low=low, high=high)
    if "low" not in spec or "high" not in spec:
        raise ParameterError(f'space input {name}: give "low" and "high", "choices", or "blocks"')
    low, high = _number(name, spec, "low", None), _number(name, spec, "high", None)
    _ordered(name, low, high)
    step = spec.get("step")
    if step is not None:
        step = _number(name, spec, "step", None)
        if step <= 0 or step > high - low:
            raise ParameterError(f"space input {name}: step must be above 0 and at most high - low")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ParameterError(f"space input {name}: log must be true or false")
    if log and (low <= 0 or step is not None):
        raise ParameterError(f"space input {name}: a log range needs low above 0 and no step")
    return Range(low, high, step, log)


def _number(name: str, spec: dict, key: str, default: float | None) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"space input {name}: {key} must be a finite number, not {value!r}")
    if abs(value) > 1000:
        raise ParameterError(f"space input {name}: {key} {value:g} is outside -1000 to 1000")
    return float(value)


def _ordered(name: str, low: float, high: float) -> None:
    if not low < high:
        raise ParameterError(f"space input {name}: low ({low:g}) must be below high ({high:g})")
