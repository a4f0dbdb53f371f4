"""XYZ axis types and their value parsers.

Each parser turns the text of one axis into labelled values and refuses a bad item by naming the
axis and the item, before any work starts. What a value does to a cell lives in `plan.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib_merge.arch.blocks import BlockSchema
from lib_merge.arch.presets import preset_names
from lib_merge.errors import AlloyError, PlanError
from lib_merge.methods.adjust import NAMES as ADJUST_NAMES
from lib_merge.methods.adjust import parse_adjust
from lib_merge.recipe import parse_vector
from lib_merge.recipe.elemental import parse_elemental
from lib_merge.recipe.form import CALC_MODES, calc_mode_name
from lib_merge.recipe.vectors import VAE_SLOT, expand_target, format_number

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\(\s*(\d+)\s*\)|\[\s*({_NUMBER})\s*\])$")


@dataclass(frozen=True)
class AxisValue:
    label: str
    value: Any


@dataclass(frozen=True)
class AxisType:
    id: str
    label: str
    kind: str  # "merge": changes the recipe, "gen": only generation, "whole": replaces the recipe
    parse: Callable[[str, BlockSchema], list[AxisValue]]
    partners: tuple[str, ...] = ()  # pinpoint axes: the axis whose value they place


def _fail(axis: str, item: object, why: str) -> PlanError:
    return PlanError(f"{axis} axis: {item!r}: {why}")


def _commas(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def _lines(text: str) -> list[str]:
    return [t.strip() for t in text.splitlines() if t.strip()]


def _paragraphs(text: str, keep_empty_first: bool = False) -> list[str]:
    """Items separated by a blank line; two leading blank lines make an empty first item."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    empty_first = keep_empty_first and re.match(r"^\s*\n\s*\n", text.replace("\r\n", "\n")) is not None
    items = [p for p in parts if p]
    return ([""] if empty_first else []) + items


def _numbers(axis: str, text: str) -> list[float]:
    values: list[float] = []
    for item in _commas(text):
        match = _RANGE.match(item)
        if match:
            first, last, count, step = match.groups()
            lo, hi = float(first), float(last)
            if count is not None:
                n = int(count)
                if n < 1:
                    raise _fail(axis, item, "a range needs at least 1 value")
                values += [lo] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]
            else:
                width = float(step)
                if width <= 0:
                    raise _fail(axis, item, "the step of a range must be positive")
                n = int(round(abs(hi - lo) / width + 1e-9)) + 1
                sign = 1 if hi >= lo else -1
                values += [lo + sign * width * i for i in range(n)]
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise _fail(axis, item, "not a number or a range like 0-1 (5) or 0-1 [0.25]") from None
    return [round(v, 10) for v in values]


def _float_values(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        return [AxisValue(format_number(v), v) for v in _numbers(axis, text)]

    return parse


def _alpha_beta(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in _commas(text):
        parts = item.split()
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise _fail("alpha and beta", item, "give 'alpha beta' or one number for both") from None
        if len(numbers) not in (1, 2):
            raise _fail("alpha and beta", item, "give 'alpha beta' or one number for both")
        a, b = numbers[0], numbers[-1]
        out.append(AxisValue(f"{format_number(a)} {format_number(b)}", (a, b)))
    return out


def _seeds(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in _commas(text):
        try:
            out.append(AxisValue(item, int(item)))
        except ValueError:
            raise _fail("seed", item, "a seed is an integer (-1: random, drawn once per plot)") from None
    return out


def vector_label(text: str, schema: BlockSchema, width: int = 25) -> str:
    """A preset's name when the text is one, else the text wrapped every `width` characters."""
    if text.strip() in preset_names(schema):
        return text.strip()
    flat = " ".join(text.split())
    return "\n".join(flat[i : i + width] for i in range(0, len(flat), width))


def _vectors(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for line in _lines(text):
            try:
                parse_vector(line, schema, default=0.0)
            except AlloyError as e:
                raise _fail(axis, line, str(e)) from None
            out.append(AxisValue(vector_label(line, schema), line))
        return out

    return parse


def _vector_pairs(text: str, schema: BlockSchema) -> list[AxisValue]:
    lines = _vectors("mbw alpha and beta")(text, schema)
    if len(lines) % 2:
        raise _fail("mbw alpha and beta", lines[-1].value, "lines come in pairs (alpha line, beta line)")
    return [
        AxisValue(f"{a.label}\n{b.label}", (a.value, b.value)) for a, b in zip(lines[::2], lines[1::2], strict=True)
    ]


def _names(text: str, schema: BlockSchema) -> list[AxisValue]:
    return [AxisValue(n, n) for n in _commas(text)]


def _slots(axis: str, item: str, schema: BlockSchema, extra: tuple[str, ...] = ()) -> tuple[bool, list[str]]:
    words = item.split()
    negate = bool(words) and words[0] == "NOT"
    chosen: list[str] = []
    for word in words[negate:]:
        if word == "ALL":
            chosen += list(schema.slots)
        elif word in extra:
            chosen.append(word)
        else:
            try:
                chosen += expand_target(word, schema)
            except AlloyError as e:
                raise _fail(axis, item, str(e)) from None
    if not chosen and not negate:
        raise _fail(axis, item, "no block named")
    return negate, chosen


def _pinpoint_blocks(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in _commas(text):
        negate, chosen = _slots("pinpoint blocks", item, schema)
        slots = [s for s in schema.slots if (s in chosen) != negate]
        out.append(AxisValue(item, tuple(slots)))
    return out


FILTER_EXTRA = (VAE_SLOT, "Adjust")


def _filter_targets(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in _commas(text):
            negate, chosen = _slots(axis, item, schema, FILTER_EXTRA)
            every = list(schema.slots) + list(FILTER_EXTRA)
            targets = [s for s in every if (s in chosen) != negate]
            out.append(AxisValue(item, " ".join(targets)))
        return out

    return parse


def _elementals(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in _paragraphs(text, keep_empty_first=True):
            try:
                parse_elemental(item)
            except AlloyError as e:
                raise _fail(axis, item, str(e)) from None
            out.append(AxisValue(item.replace("\n", ", ") or "no elemental", item))
        return out

    return parse


def _elements(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in _commas(text):
            if item.count(":") != 1:
                raise _fail(axis, item, "an item is Blocks:Elements")
            try:
                parse_elemental(f"{item}:0")
            except AlloyError as e:
                raise _fail(axis, item, str(e)) from None
            out.append(AxisValue(item, item))
        return out

    return parse


def _adjusts(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for line in _lines(text):
        try:
            parse_adjust(line)
        except AlloyError as e:
            raise _fail("adjust", line, str(e)) from None
        out.append(AxisValue(line, line))
    return out


def _adjust_names(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in _commas(text):
        names = ADJUST_NAMES if item == "ALL" else tuple(item.split())
        unknown = [n for n in names if n not in ADJUST_NAMES]
        if unknown:
            raise _fail("pinpoint adjust", item, f"unknown name {unknown[0]!r}; use {', '.join(ADJUST_NAMES)} or ALL")
        out.append(AxisValue(item, names))
    return out


def _calc_modes(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in _commas(text):
        if calc_mode_name(item) not in CALC_MODES:
            raise _fail("calcmode", item, f"unknown calc mode; known: {', '.join(CALC_MODES)}")
        out.append(AxisValue(item, calc_mode_name(item)))
    return out


def _prompt_lines(text: str, schema: BlockSchema) -> list[AxisValue]:
    return [AxisValue(p, p) for p in _lines(text)]


def _prompt_paragraphs(text: str, schema: BlockSchema) -> list[AxisValue]:
    return [AxisValue(p, p) for p in _paragraphs(text)]


def _random(text: str, schema: BlockSchema) -> list[AxisValue]:
    items = _commas(text)
    if len(items) != 1 or not items[0].isdigit() or int(items[0]) < 1:
        raise _fail("random", text.strip(), "give the number of Dice draws, a positive integer")
    return [AxisValue(f"roll {i + 1}", i) for i in range(int(items[0]))]


def _merge_ids(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in _commas(text):
        try:
            out.append(AxisValue(f"id {item}", int(item)))
        except ValueError:
            raise _fail("merge id", item, "a history id is an integer (-1: the last merge)") from None
    return out


def _recipe_files(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for line in _lines(text):
        if "/" in line or "\\" in line or line.startswith("."):
            raise _fail("recipe", line, "give a file name from the recipes folder, not a path")
        out.append(AxisValue(line, line))
    return out


_SWITCH = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _switches(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in _commas(text):
            if item.lower() not in _SWITCH:
                raise _fail(axis, item, "give on or off")
            out.append(AxisValue(f"{axis} {item.lower()}", _SWITCH[item.lower()]))
        return out

    return parse


_NUMERIC = ("alpha", "beta", "alpha_beta")
AXIS_TYPES: dict[str, AxisType] = {
    t.id: t
    for t in (
        AxisType("alpha", "alpha", "merge", _float_values("alpha")),
        AxisType("beta", "beta", "merge", _float_values("beta")),
        AxisType("alpha_beta", "alpha and beta", "merge", _alpha_beta),
        AxisType("seed", "seed", "gen", _seeds),
        AxisType("mbw_alpha", "mbw alpha", "merge", _vectors("mbw alpha")),
        AxisType("mbw_beta", "mbw beta", "merge", _vectors("mbw beta")),
        AxisType("mbw_alpha_beta", "mbw alpha and beta", "merge", _vector_pairs),
        AxisType("model_a", "model A", "merge", _names),
        AxisType("model_b", "model B", "merge", _names),
        AxisType("model_c", "model C", "merge", _names),
        AxisType("pinpoint_blocks", "pinpoint blocks", "merge", _pinpoint_blocks, _NUMERIC),
        AxisType("include", "include blocks", "merge", _filter_targets("include blocks")),
        AxisType("exclude", "exclude blocks", "merge", _filter_targets("exclude blocks")),
        AxisType("add_include", "add include", "merge", _filter_targets("add include")),
        AxisType("add_exclude", "add exclude", "merge", _filter_targets("add exclude")),
        AxisType("elemental", "elemental", "merge", _elementals("elemental")),
        AxisType("add_elemental", "add elemental", "merge", _elementals("add elemental")),
        AxisType("pinpoint_element", "pinpoint element", "merge", _elements("pinpoint element"), ("alpha",)),
        AxisType("elemental_checker", "effective elemental checker", "merge", _elements("effective elemental checker")),
        AxisType("adjust", "adjust", "merge", _adjusts),
        AxisType("pinpoint_adjust", "pinpoint adjust", "merge", _adjust_names, ("alpha",)),
        AxisType("calcmode", "calcmode", "merge", _calc_modes),
        AxisType("rebasin", "re-basin", "merge", _switches("re-basin")),
        AxisType("prompt", "prompt", "gen", _prompt_lines),
        AxisType("prompt_multiline", "prompt (multi-line)", "gen", _prompt_paragraphs),
        AxisType("prompt_batch", "prompt batch", "gen", _prompt_paragraphs),
        AxisType("random", "random", "merge", _random),
        AxisType("merge_id", "merge id", "whole", _merge_ids),
        AxisType("recipe", "recipe", "whole", _recipe_files),
    )
}
# SuperMerger's labels, accepted in imported presets.
SUPERMERGER_LABELS = {
    "alpha": "alpha", "beta": "beta", "alpha and beta": "alpha_beta", "seed": "seed",
    "mbw alpha": "mbw_alpha", "mbw beta": "mbw_beta", "mbw alpha and beta": "mbw_alpha_beta",
    "model_A": "model_a", "model_B": "model_b", "model_C": "model_c", "pinpoint blocks": "pinpoint_blocks",
    "include blocks": "include", "exclude blocks": "exclude", "add include": "add_include",
    "add exclude": "add_exclude", "elemental": "elemental", "add elemental": "add_elemental",
    "pinpoint element": "pinpoint_element", "effective elemental checker": "elemental_checker",
    "adjust": "adjust", "pinpoint adjust": "pinpoint_adjust", "calcmode": "calcmode", "prompt": "prompt",
    "random": "random",
}  # fmt: skip


def axis_type(type_id: str) -> AxisType:
    found = AXIS_TYPES.get(type_id) or AXIS_TYPES.get(SUPERMERGER_LABELS.get(type_id, ""))
    if found is None:
        raise PlanError(f"unknown axis type {type_id!r}; known: {', '.join(AXIS_TYPES)}")
    return found


def parse_axis(type_id: str, text: str, schema: BlockSchema) -> list[AxisValue]:
    """The values of one axis; an empty list is refused by the planner with the axis's name."""
    return axis_type(type_id).parse(str(text or ""), schema)
