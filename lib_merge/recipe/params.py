"""A method's parameter values, from recipes, JSON, flags and widgets, checked against its declaration only.

The method's signature (methods/registry.py) is the one place a parameter is named and typed; the recipe
parser, the forms of every surface and the XYZ axes all hold a value through `param_value`, so the same
value is accepted or refused, with the same words, wherever it is written. Block vectors are checked
against the same ranges when the recipe is bound (engine/bind.py), still before the first tensor is read.
"""

from __future__ import annotations

import math

from lib_merge.errors import ParameterError, RecipeTypeError
from lib_merge.methods.registry import MethodSpec, ParamSpec
from lib_merge.recipe.nodes import BlocksSpec, Param
from lib_merge.recipe.vectors import format_number

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def describe_params(spec: MethodSpec) -> str:
    """The method's parameters as a person reads them: "density (0.5, 0 to 1), sign (sum | count)"."""
    return ", ".join(describe(p) for p in spec.params) or "none"


def describe(param: ParamSpec) -> str:
    if param.choices:
        return f"{param.name} ({' | '.join(param.choices)})"
    if param.boolean:
        return f"{param.name} (true | false)"
    if param.text:
        return param.name
    if param.per_model:
        return f"{param.name} ({param.default:g}, or one number per model)"
    if param.integer:
        low, high = int(param.low), int(param.high)
        span = f"a whole number from {low}" if high >= 2**53 else f"{low} to {high}"
        return f"{param.name} ({param.default}, {span})"
    if not param.enforce:
        return f"{param.name} ({param.default:g})"
    return f"{param.name} ({param.default:g}, {param.low:g} to {param.high:g})"


def method_params(spec: MethodSpec, given: dict[str, object], models: int) -> dict[str, object]:
    """Every parameter of `spec`: the given ones held as the method holds them, the rest its defaults.
    `models`: how many models the method gets (per-model lists must have one number each)."""
    params: dict[str, object] = {}
    for name, value in given.items():
        params[name] = param_value(spec, name, value, models)
    for p in spec.params:
        params.setdefault(p.name, p.default)
    return params


def param_value(spec: MethodSpec, name: str, value: object, models: int) -> object:
    """One value as the method holds it; text is read the way the parameter reads text."""
    if not spec.takes(name):
        raise RecipeTypeError(f"{spec.name}() has no parameter '{name}'; parameters: {describe_params(spec)}")
    param = spec.param(name)
    if isinstance(value, Param):
        return value  # an open template parameter, filled by compose
    if isinstance(value, str) and not (param.choices or param.text):
        value = _from_text(spec, param, value)
    where = f"{spec.name}() parameter '{name}'"
    if param.per_model and isinstance(value, (list, tuple)):
        based = spec.inputs[0] == "base"
        wanted = models - 1 if based else models
        if len(value) != wanted or not all(_is_number(v) for v in value):
            per = "per model after the base" if based else "per model"
            raise RecipeTypeError(f"{where} takes one number {per} ({wanted}), got {list(value)!r}")
        held = tuple(_finite(where, float(v)) for v in value)
        check_range(spec.name, param, held)
        return held
    if param.text:
        return param.parse_text(value) if isinstance(value, str) else value
    if param.boolean:
        if isinstance(value, bool):
            return float(value)
        raise RecipeTypeError(f"{where} must be true or false, got {value!r}")
    if param.choices:
        if value not in param.choices:
            raise RecipeTypeError(f"{where} must be one of {', '.join(param.choices)}, got {value!r}")
        return value
    if _is_number(value):
        number = _finite(where, value)
        if param.integer and not float(number).is_integer():
            raise RecipeTypeError(f"{where} must be a whole number, got {value!r}")
        held = int(number) if param.integer else float(number)  # seeds stay exact up to 2**63 - 1
        check_range(spec.name, param, [held])
        return held
    if isinstance(value, BlocksSpec) and param.vector:
        return value
    kind = "a number or a block vector" if param.vector else "a number"
    raise RecipeTypeError(f"{where} must be {kind}")


def check_range(method: str, param: ParamSpec, values) -> None:
    """Every number inside the parameter's hard range (its declared one where enforced, else ±1000)."""
    low, high = param.hard_range
    bad = [v for v in values if not low <= v <= high]  # NaN fails both comparisons
    if bad:
        shown = (lambda v: str(int(v))) if param.integer and math.isfinite(bad[0]) else format_number
        raise ParameterError(f"{method}(): {param.name} must lie in [{shown(low)}, {shown(high)}], not {shown(bad[0])}")


def _from_text(spec: MethodSpec, param: ParamSpec, text: str) -> object:
    """Text from a flag, a widget or an axis: a number, true/false, numbers per model, or a block vector."""
    words = text.strip()
    if param.boolean:
        lowered = words.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        return words
    if param.per_model and "," in words:
        return [_number_or_text(w) for w in words.split(",")]
    number = _number_or_text(words)
    if not isinstance(number, str):
        return number
    if param.vector and words:
        return BlocksSpec(words)  # a block vector or a preset name: read against the models' schema
    return words


def _number_or_text(text: str) -> object:
    text = text.strip()
    try:
        return int(text)  # exact, for seeds beyond 2**53
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _finite(where: str, value: float | int) -> float | int:
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeTypeError(f"{where} must be a finite number, got {value!r}")
    return value
