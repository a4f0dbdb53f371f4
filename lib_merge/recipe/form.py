"""Merge settings as one dataclass, and the recipe they describe.

The CLI flags, the WebUI's widgets and the HTTP API all fill a MergeSettings; only this
module turns one into a recipe, so every surface builds the same recipe for the same choice.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import AlloyError, InvalidComboError, ParameterError
from lib_merge.methods import get_method, model_limit, names_of_kind
from lib_merge.methods.adjust import parse_adjust
from lib_merge.recipe.elemental import parse_elemental
from lib_merge.recipe.filters import KeyFilter
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef, Node
from lib_merge.recipe.params import method_params, param_value
from lib_merge.recipe.vectors import parse_vector


@dataclass
class MergeSettings:
    a: str
    b: str
    mode: str = "weighted_sum"
    c: str | None = None
    alpha: float | None = None  # None: the method's default
    beta: float | None = None
    blocks: str | None = None  # alpha as a block vector (list or named form)
    preset: str | None = None  # alpha as a preset name
    calc: str = "normal"  # calc mode
    gamma: float | None = None
    seed: int | None = None
    elemental: str | None = None  # "Blocks:Elements:Ratio" rules
    include: str | None = None  # blocks, VAE, Adjust and key substrings, space or comma separated
    exclude: str | None = None
    adjust: str | None = None  # "IN,OUT,OUT2,CONT,BRI,COL1,COL2,COL3"
    beta_blocks: str | None = None  # beta as a block vector (XYZ mbw beta, Dice)
    rebasin: bool = False  # B (and C) as rebasin(M, ref=A): aligned to A before the merge
    max_sweeps: int | None = None  # re-basin's sweep cap (None: its default)

    def as_dict(self) -> dict:
        return asdict(self)

    def record(self) -> dict:
        """The history's settings column for this form."""
        return self.as_dict()


def _calc_modes() -> dict[str, tuple[tuple[str, ...], str | None, dict[str, object]]]:
    """calc mode -> (the modes it works with, the recipe method, fixed parameters), from the calc methods'
    declarations: a calc mode replaces the mode whose models it takes (A, B, C: add difference)."""
    table: dict[str, tuple[tuple[str, ...], str | None, dict[str, object]]] = {
        "normal": (names_of_kind("mode"), None, {})
    }
    for name in names_of_kind("calc"):
        spec = get_method(name)
        works_with = ("add_difference",) if len(spec.inputs) == 3 else ("weighted_sum",)
        for calc, fixed in spec.calc_modes:
            table[calc] = (works_with, spec.name, dict(fixed))
    return table


CALC_MODES = _calc_modes()
CALC_ALIASES = {alias: calc for name in names_of_kind("calc") for alias, calc in get_method(name).calc_aliases}


def calc_mode_name(text: str) -> str:
    """The calc mode a name means: ours, or SuperMerger's spelling of it (from its recipes and axes)."""
    return CALC_ALIASES.get(text, text)


def method_for(mode: str, calc: str = "normal") -> str:
    """The recipe method of a mode and calc mode, or an error that says which combinations work."""
    calc = calc_mode_name(calc or "normal")
    mode = get_method(mode, kind="mode").name
    if calc not in CALC_MODES:
        raise InvalidComboError(f"unknown calc mode {calc!r}; known: {', '.join(CALC_MODES)}")
    modes, method, _ = CALC_MODES[calc]
    if mode not in modes:
        need = " and a model C" if modes == ("add_difference",) else ""
        raise InvalidComboError(
            f"{calc} needs mode {get_method(modes[0]).label}{need}; valid with {get_method(mode).label}: "
            + ", ".join(c for c, (m, _, _) in CALC_MODES.items() if mode in m)
        )
    return method or mode


def _check_finite(values: dict[str, object]) -> None:
    for name, value in values.items():
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"{name} must be a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ParameterError(f"{name} must be a finite number, not {value!r}")


def vector_covers_every_block(s: MergeSettings) -> bool:
    """Whether the alpha block vector (or preset) sets every block itself, leaving the scalar alpha
    unused, in every block schema where it reads."""
    spec = s.blocks or s.preset
    if not spec:
        return False
    verdicts = []
    for schema_id in ("sd1", "sdxl"):
        try:
            parsed = parse_vector(spec, SCHEMAS[schema_id], default=math.nan)
        except AlloyError:
            continue
        verdicts.append(not any(math.isnan(v) for v in parsed.vector.values))
    return bool(verdicts) and all(verdicts)


def build_recipe(s: MergeSettings) -> MergeNode:
    """The recipe of these settings; impossible combinations are refused with what is valid."""
    _check_finite({"alpha": s.alpha, "beta": s.beta, "gamma": s.gamma})
    if s.blocks and s.preset:
        raise ParameterError("give block weights either as a vector or as a preset, not both")
    spec = get_method(method_for(s.mode, s.calc))
    models = (
        [m for m in (s.a, s.b, s.c) if m][: len(spec.inputs)]
        if len(spec.inputs) == 1
        else [s.a, s.b] + ([s.c] if s.c else [])
    )
    if len(models) < len(spec.inputs):
        raise InvalidComboError(f"mode {spec.name} needs models {', '.join(spec.inputs)}: add model C")
    if len(models) > len(spec.inputs):
        raise InvalidComboError(f"mode {spec.name} takes models A and B only; model C is not used")
    names = {p.name for p in spec.params}
    for name in ("beta", "gamma", "seed"):
        used = name in names or (name == "seed" and bool(s.elemental))  # elemental R/U/X draw from the seed
        if getattr(s, name) is not None and not used:
            raise ParameterError(f"{name} is not used by mode {spec.name}")
    params: dict[str, object] = dict(CALC_MODES[calc_mode_name(s.calc or "normal")][2])
    if s.blocks or s.preset:
        params["alpha"] = BlocksSpec(s.blocks or s.preset, preset=s.preset, default=s.alpha)
    elif s.alpha is not None:
        params["alpha"] = param_value(spec, "alpha", s.alpha, len(models))
    for name in ("beta", "gamma", "seed"):
        if getattr(s, name) is not None and name in names:
            params[name] = param_value(spec, name, getattr(s, name), len(models))
    if s.beta_blocks:
        if "beta" not in names:
            raise ParameterError(f"beta is not used by mode {spec.name}")
        params["beta"] = BlocksSpec(s.beta_blocks, default=s.beta)
    for p in spec.params:
        params.setdefault(p.name, p.default)
    options = _options(s)
    inputs = _rebased([ModelRef(m) for m in models], s.rebasin, s.max_sweeps)
    node = MergeNode(spec.name, inputs, params | options)
    if s.adjust and s.adjust.strip():
        values = parse_adjust(s.adjust)
        if any(values.numbers):
            extra = {"filter": options["filter"]} if "filter" in options else {}
            node = MergeNode("adjust", (node,), {"values": values} | extra)
    return node


def _rebased(models: list[ModelRef], rebasin: bool, max_sweeps: int | None) -> tuple[Node, ...]:
    """With re-basin, every model after A as rebasin(M, ref=A)."""
    if not rebasin:
        if max_sweeps is not None:
            raise ParameterError("max_sweeps is a re-basin setting: turn re-basin on to use it")
        return tuple(models)
    if len(models) < 2:
        raise InvalidComboError("re-basin aligns B to A: it needs a model B")
    return (models[0], *(rebasin_node(m, models[0], max_sweeps) for m in models[1:]))


def rebasin_node(model: ModelRef, ref: ModelRef, max_sweeps: int | None = None) -> MergeNode:
    """rebasin(model, ref=ref) with the method's own default sweep cap when none is given."""
    spec = get_method("rebasin")
    given = {} if max_sweeps is None else {"max_sweeps": max_sweeps}
    return MergeNode(spec.name, (model, ref), method_params(spec, given, 2))


_TARGET = re.compile(r"^(BASE|VAE|Adjust|[A-Z]+\d+)$")


def parse_filter(mode: str, text: str) -> KeyFilter:
    """Block names, VAE and Adjust are targets; any other word is a key substring."""
    words = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    return KeyFilter(mode, tuple(w for w in words if _TARGET.match(w)), tuple(w for w in words if not _TARGET.match(w)))


def _options(s: MergeSettings) -> dict:
    options: dict = {}
    if s.elemental and s.elemental.strip():
        options["elemental"] = parse_elemental(s.elemental, int(s.seed or 0))
    if s.include and s.include.strip() and s.exclude and s.exclude.strip():
        raise ParameterError("give include or exclude, not both")
    for mode in ("include", "exclude"):
        text = getattr(s, mode)
        if text and text.strip():
            options["filter"] = parse_filter(mode, text)
    return options


MODERN_METHODS = names_of_kind("method")


@dataclass
class MethodSettings:
    """A modern or N-model method over a base A and further models (CLI --method, the UI's method choice).
    `params` holds the method's own parameters by their declared names; the rest keep their defaults."""

    a: str
    models: list[str]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    rebasin: bool = False  # every model after A as rebasin(M, ref=A)
    max_sweeps: int | None = None

    @staticmethod
    def gather_params(data: dict) -> dict:
        """A method form's JSON with all the method's parameters under `params`: also those that stand
        beside the other fields, as history rows and clients wrote them before `params` (`"alpha": 0.5`)."""
        spec = get_method(str(data.get("method")), kind="method")
        given = data.get("params")
        if given is not None and not isinstance(given, dict):
            return dict(data)  # left for the type check to name
        beside = [k for k in data if spec.takes(k) and k not in MethodSettings.__dataclass_fields__]
        params = {k: data[k] for k in beside if data[k] is not None} | dict(given or {})
        rest = {k: v for k, v in data.items() if k not in beside}
        return {**rest, "method": spec.name, "params": params}

    @classmethod
    def from_dict(cls, data: dict) -> MethodSettings:
        """A method's form as a history row holds it (either way of writing its parameters)."""
        data = cls.gather_params(data)
        return cls(
            str(data.get("a") or ""),
            [str(m) for m in data.get("models") or []],
            data["method"],
            dict(data.get("params") or {}),
            bool(data.get("rebasin")),
            data.get("max_sweeps"),
        )

    def as_dict(self) -> dict:
        return asdict(self)

    def record(self) -> dict:
        """The history's settings column: a method's form under "method" (the Merge tab reads it back),
        numbers given as text (the CLI's --param) held as numbers, so every surface logs one row."""
        spec = get_method(self.method, kind="method")
        params = dict(self.params)
        for name, value in self.params.items():
            if isinstance(value, str) and spec.takes(name):
                held = param_value(spec, name, value, 1 + len(self.models))
                params[name] = held if isinstance(held, (int, float, str)) else value
        return {"method": {**self.as_dict(), "params": params}}


def build_method_recipe(s: MethodSettings) -> MergeNode:
    spec = get_method(s.method, kind="method")
    inputs = [s.a, *s.models]
    if len(inputs) < len(spec.inputs) or (not spec.variadic and len(inputs) > len(spec.inputs)):
        count = f"{len(spec.inputs) - 1}" if not spec.variadic else f"at least {len(spec.inputs) - 1}"
        raise InvalidComboError(f"{s.method} takes {count} models besides A, got {len(s.models)}")
    if len(inputs) > spec.max_models:
        raise InvalidComboError(f"{model_limit(spec)}, got {len(s.models)}")
    given = {name: value for name, value in (s.params or {}).items() if value is not None}
    params = method_params(spec, given, len(inputs))
    return MergeNode(spec.name, _rebased([ModelRef(m) for m in inputs], s.rebasin, s.max_sweeps), params)


def compile_form(form: MergeSettings | MethodSettings) -> MergeNode:
    """The recipe of either form: mode settings or a modern method."""
    return build_method_recipe(form) if isinstance(form, MethodSettings) else build_recipe(form)
