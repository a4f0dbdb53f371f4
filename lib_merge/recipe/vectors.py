"""Block vectors: per-slot values parsed from a list, a named form or a preset."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lib_merge.arch.blocks import SCHEMAS, VAE_SLOT, BlockSchema
from lib_merge.arch.presets import lookup_preset
from lib_merge.errors import BlockVectorError

_SD1_ON_SDXL_IN = list(range(0, 10))  # BASE, IN00..IN08 of a 26-vector
_SD1_ON_SDXL_OUT = [13] + list(range(14, 23))  # M00, OUT00..OUT08 of a 26-vector


@dataclass(frozen=True)
class BlockVector:
    """A value for every slot of one schema; `vae` is None when the VAE follows BASE."""

    schema_id: str
    values: tuple[float, ...]
    vae: float | None = None

    def value(self, schema: BlockSchema, slot: str) -> float:
        if slot == VAE_SLOT:
            return self.values[0] if self.vae is None else self.vae
        return self.values[schema.index(slot)]


@dataclass(frozen=True)
class ParsedVector:
    vector: BlockVector
    notes: tuple[str, ...] = ()


def format_number(x: float) -> str:
    x = float(x)
    return repr(0.0 if x == 0 else x)


def parse_vector(spec: str | list | tuple, schema: BlockSchema, default: float | None = None) -> ParsedVector:
    """Resolve one vector spec against a schema; `default` fills slots a named form leaves open."""
    fine = SCHEMAS.get(schema.fine) if schema.fine else None
    if isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        text = spec.strip()
        if "=" in text:
            if fine is not None and _names_fine_slots(text, schema, fine):
                return _from_named(text, fine, default)
            return _from_named(text, schema, default)
        items = [v.strip() for v in text.split(",")] if "," in text else None
    if items is not None:
        if fine is not None and len(items) == len(fine) + 1:  # extended SDXL: 109 slots and the VAE
            return _from_list(items, fine, "list")
        return _from_list(items, schema, "list")
    values = lookup_preset(text, schema)
    return _from_list(values, schema, f"preset {text}")


def _names_fine_slots(text: str, schema: BlockSchema, fine: BlockSchema) -> bool:
    """Whether a named vector uses the finer schema's slot names (IN411=…) rather than the plain ones."""
    targets = [t.partition("=")[0] for t in text.split()]
    names = {n for t in targets for n in t.split("-") if n and n != "*" and not n.endswith("*")}
    return bool(names) and not names <= set(schema.slots) | {VAE_SLOT} and names <= set(fine.slots) | {VAE_SLOT}


def _number(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise BlockVectorError(f"{where}: {value!r} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BlockVectorError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise BlockVectorError(f"{where}: {value!r} is not a finite number")
    return number


def _accepted_lengths(schema: BlockSchema) -> str:
    n = len(schema)
    extra = " or 26 (SD1 vector, mapped), or 110 (extended SDXL)" if schema.id == "sdxl" else ""
    return f"{n} or {n + 1} (with VAE){extra}"


def _from_list(raw: list, schema: BlockSchema, source: str) -> ParsedVector:
    values = [_number(v, f"block vector value {i + 1}") for i, v in enumerate(raw)]
    n = len(schema)
    notes: list[str] = []
    vae = None
    if schema.id == "sdxl" and len(values) in (26, 27):
        vae = values[26] if len(values) == 27 else None
        values = [values[i] for i in _SD1_ON_SDXL_IN + _SD1_ON_SDXL_OUT]
        notes.append("26-value vector mapped to SDXL: IN09–IN11, OUT09–OUT11 ignored")
    elif len(values) == n + 1:
        vae = values.pop()
    elif len(values) != n:
        if schema.id == "sd1" and len(values) == 20:
            raise BlockVectorError("20 values given but SD1 has 26 blocks (BASE, IN00…IN11, M00, OUT00…OUT11)")
        raise BlockVectorError(
            f"{source} has {len(values)} values but {schema.label} takes {_accepted_lengths(schema)}"
        )
    return ParsedVector(BlockVector(schema.id, tuple(values), vae), tuple(notes))


def expand_target(target: str, schema: BlockSchema) -> list[str]:
    slots = schema.slots
    if target == VAE_SLOT:
        return [VAE_SLOT]
    if target.endswith("*"):
        group = [s for s in slots if s.startswith(target[:-1]) and target[:-1]]
        if group:
            return group
    elif "-" in target:
        first, _, last = target.partition("-")
        first, last = _check_slot(first, schema), _check_slot(last, schema)
        i, j = slots.index(first), slots.index(last)
        if i > j:
            raise BlockVectorError(f"block range {target!r} runs backwards; write {last}-{first}")
        return list(slots[i : j + 1])
    else:
        return [_check_slot(target, schema)]
    raise BlockVectorError(f"unknown block group {target!r} for {schema.label}")


def _check_slot(name: str, schema: BlockSchema) -> str:
    slot = schema.resolve(name)
    if slot is None:
        raise BlockVectorError(f"unknown block {name!r} for {schema.label}; valid: {schema.describe()}, {VAE_SLOT}")
    return slot


def _from_named(text: str, schema: BlockSchema, default: float | None) -> ParsedVector:
    star = None
    assigned: dict[str, float] = {}
    for token in text.split():
        target, sep, raw = token.partition("=")
        if not sep or not target:
            raise BlockVectorError(f"block assignment {token!r} must look like NAME=value")
        value = _number(raw, f"block assignment {token!r}")
        if target == "*":
            star = value
            continue
        for slot in expand_target(target, schema):
            assigned[slot] = value
    notes: list[str] = []
    fill = star if star is not None else default
    if fill is None and len(assigned.keys() - {VAE_SLOT}) < len(schema):
        notes.append("blocks not named take 0 (no '*=' and no scalar value given)")
        fill = 0.0
    values = tuple(assigned.get(s, fill) for s in schema.slots)
    return ParsedVector(BlockVector(schema.id, values, assigned.get(VAE_SLOT)), tuple(notes))


def format_vector(vector: BlockVector, schema: BlockSchema) -> str:
    """Canonical named form: schema order, runs of equal values collapsed to ranges."""
    parts = []
    slots, values = schema.slots, vector.values
    i = 0
    while i < len(slots):
        j = i
        while j + 1 < len(slots) and values[j + 1] == values[i]:
            j += 1
        target = slots[i] if i == j else f"{slots[i]}-{slots[j]}"
        parts.append(f"{target}={format_number(values[i])}")
        i = j + 1
    if vector.vae is not None:
        parts.append(f"{VAE_SLOT}={format_number(vector.vae)}")
    return " ".join(parts)
