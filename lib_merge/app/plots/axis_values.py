"""How the text of an XYZ axis becomes labelled values.

Each parser turns the text of one axis into values and refuses a bad item by naming the axis and the
item, before any work starts. The axis types (axes.py) pair each parser with what its value does.
"""

from __future__ import annotations

import re
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


def _fail(axis: str, item: object, why: str) -> PlanError:
    return PlanError(f"{axis} axis: {item!r}: {why}")


def commas(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def _lines(text: str) -> list[str]:
    return [t.strip() for t in text.splitlines() if t.strip()]


def _paragraphs(text: str, keep_empty_first: bool = False) -> list[str]:
    """Items separated by a blank line; two leading blank lines make an empty first item."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    empty_first = keep_empty_first and re.match(r"^\s*\n\s*\n", text.replace("\r\n", "\n")) is not None
    items = [p for p in parts if p]
    return ([""] if empty_first else []) + items


def numbers(axis: str, text: str) -> list[float]:
    values: list[float] = []
    for item in commas(text):
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


def float_values(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        return [AxisValue(format_number(v), v) for v in numbers(axis, text)]

    return parse


def alpha_beta(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in commas(text):
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


def seeds(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in commas(text):
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


def vectors(axis: str):
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


def vector_pairs(text: str, schema: BlockSchema) -> list[AxisValue]:
    lines = vectors("mbw alpha and beta")(text, schema)
    if len(lines) % 2:
        raise _fail("mbw alpha and beta", lines[-1].value, "lines come in pairs (alpha line, beta line)")
    return [
        AxisValue(f"{a.label}\n{b.label}", (a.value, b.value)) for a, b in zip(lines[::2], lines[1::2], strict=True)
    ]


def names(text: str, schema: BlockSchema) -> list[AxisValue]:
    return [AxisValue(n, n) for n in commas(text)]


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


def pinpoint_blocks(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in commas(text):
        negate, chosen = _slots("pinpoint blocks", item, schema)
        slots = [s for s in schema.slots if (s in chosen) != negate]
        out.append(AxisValue(item, tuple(slots)))
    return out


FILTER_EXTRA = (VAE_SLOT, "Adjust")


def filter_targets(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in commas(text):
            negate, chosen = _slots(axis, item, schema, FILTER_EXTRA)
            every = list(schema.slots) + list(FILTER_EXTRA)
            targets = [s for s in every if (s in chosen) != negate]
            out.append(AxisValue(item, " ".join(targets)))
        return out

    return parse


def elementals(axis: str):
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


def elements(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in commas(text):
            if item.count(":") != 1:
                raise _fail(axis, item, "an item is Blocks:Elements")
            try:
                parse_elemental(f"{item}:0")
            except AlloyError as e:
                raise _fail(axis, item, str(e)) from None
            out.append(AxisValue(item, item))
        return out

    return parse


def adjusts(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for line in _lines(text):
        try:
            parse_adjust(line)
        except AlloyError as e:
            raise _fail("adjust", line, str(e)) from None
        out.append(AxisValue(line, line))
    return out


def adjust_names(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in commas(text):
        names = ADJUST_NAMES if item == "ALL" else tuple(item.split())
        unknown = [n for n in names if n not in ADJUST_NAMES]
        if unknown:
            raise _fail("pinpoint adjust", item, f"unknown name {unknown[0]!r}; use {', '.join(ADJUST_NAMES)} or ALL")
        out.append(AxisValue(item, names))
    return out


def calc_modes(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in commas(text):
        if calc_mode_name(item) not in CALC_MODES:
            raise _fail("calcmode", item, f"unknown calc mode; known: {', '.join(CALC_MODES)}")
        out.append(AxisValue(item, calc_mode_name(item)))
    return out


def prompt_lines(text: str, schema: BlockSchema) -> list[AxisValue]:
    return [AxisValue(p, p) for p in _lines(text)]


def prompt_paragraphs(text: str, schema: BlockSchema) -> list[AxisValue]:
    return [AxisValue(p, p) for p in _paragraphs(text)]


def random(text: str, schema: BlockSchema) -> list[AxisValue]:
    items = commas(text)
    if len(items) != 1 or not items[0].isdigit() or int(items[0]) < 1:
        raise _fail("random", text.strip(), "give the number of Dice draws, a positive integer")
    return [AxisValue(f"roll {i + 1}", i) for i in range(int(items[0]))]


def merge_ids(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for item in commas(text):
        try:
            out.append(AxisValue(f"id {item}", int(item)))
        except ValueError:
            raise _fail("merge id", item, "a history id is an integer (-1: the last merge)") from None
    return out


def recipe_files(text: str, schema: BlockSchema) -> list[AxisValue]:
    out = []
    for line in _lines(text):
        if "/" in line or "\\" in line or line.startswith("."):
            raise _fail("recipe", line, "give a file name from the recipes folder, not a path")
        out.append(AxisValue(line, line))
    return out


_SWITCH = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def switches(axis: str):
    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in commas(text):
            if item.lower() not in _SWITCH:
                raise _fail(axis, item, "give on or off")
            out.append(AxisValue(f"{axis} {item.lower()}", _SWITCH[item.lower()]))
        return out

    return parse


def param_values(name: str):
    """A declared parameter's values: numbers and ranges (0-1 (5)) as numbers, any other item as its
    text (words such as sum, mean; true, false); each cell's recipe checks them by the declaration."""
    axis = f"param:{name}"

    def parse(text: str, schema: BlockSchema) -> list[AxisValue]:
        out = []
        for item in commas(text):
            if _RANGE.match(item):
                out += [AxisValue(format_number(v), v) for v in numbers(axis, item)]
                continue
            try:
                number = float(item)
            except ValueError:
                out.append(AxisValue(item, item))
                continue
            out.append(AxisValue(item, int(item) if item.lstrip("+-").isdigit() else number))
        return out

    return parse
