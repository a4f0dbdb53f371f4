"""LoRA block weights: the 17-value (SD1) and 12-value (SDXL) vectors of LoRA tools, their presets, and
the full 26/20-slot vectors they stand for (slots they do not name are 0); for Flux (and other schemas
without a LoRA tools' short form) the schema's own slots: all values, or `SLOT=value` assignments."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.arch.presets import read_preset_file
from lib_merge.errors import BlockVectorError
from lib_merge.paths import LORA_PRESETS, preset_files

SD1_LORA_SLOTS = ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00",
                  "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11")  # fmt: skip
SDXL_LORA_SLOTS = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")
# An SD1 preset on SDXL: BASE, IN04, IN05, IN07, IN08, M00 and OUT03…OUT08 (as OUT00…OUT05).
_SD1_TO_SDXL = (0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)


def _read(path: Path, strict: bool = True) -> dict[str, tuple[float, ...]]:
    return {name: tuple(values) for (name, _), values in read_preset_file(path, strict).items()}


def shipped_lora_presets() -> dict[str, tuple[float, ...]]:
    """The shipped LoRA presets (presets/lbw_presets.tsv), in the file's order."""
    return _read(preset_files(LORA_PRESETS)[0])


def load_lora_presets(imported: Iterable[Path] = ()) -> dict[str, tuple[float, ...]]:
    """The shipped LoRA presets, then those of other tools' files (the LoRA Block Weight extension's
    lbwpresets.txt; lines that are not numbers are skipped), then the user's own file, which wins on a name."""
    shipped, user_file = preset_files(LORA_PRESETS)
    presets = _read(shipped)
    for path, strict in [(Path(p), False) for p in imported] + [(user_file, True)]:
        if path.is_file():
            presets.update(_read(path, strict))
    return presets


def lora_block_vector(spec: str, schema_id: str, presets: Mapping[str, tuple[float, ...]] | None = None) -> list[float]:
    """A LoRA block spec (a preset name, or 17/26 values for SD1, 12/20 for SDXL) as the schema's full vector."""
    schema = SCHEMAS.get(schema_id)
    if schema is None:
        raise BlockVectorError(f"LoRA block weights need a model with blocks, not {schema_id}")
    if schema_id not in ("sd1", "sdxl"):
        return _schema_vector(spec, schema, presets)
    short = SD1_LORA_SLOTS if schema_id == "sd1" else SDXL_LORA_SLOTS
    presets = shipped_lora_presets() if presets is None else presets
    text = spec.strip()
    named = presets.get(text, presets.get(text.upper()))
    if named is not None:
        values = [float(v) for v in named]
        if schema_id == "sdxl" and len(values) == len(SD1_LORA_SLOTS):
            values = [values[i] for i in _SD1_TO_SDXL]
    else:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            known = ", ".join(presets)
            raise BlockVectorError(f"LoRA blocks {spec!r}: not a preset ({known}) nor a list of numbers") from None
    if len(values) == len(schema):
        return values
    if len(values) != len(short):
        raise BlockVectorError(
            f"LoRA blocks for {schema.label} take {len(short)} or {len(schema)} values, not {len(values)}"
        )
    full = dict.fromkeys(schema.slots, 0.0)
    full.update(zip(short, values, strict=True))
    return [full[slot] for slot in schema.slots]


def _schema_vector(spec: str, schema, presets: Mapping[str, tuple[float, ...]] | None) -> list[float]:
    """A vector over the schema's own slots (Flux: CLIP, T5, IN, D00…D18, S00…S37, OUT): a preset or list
    of that many values, or assignments `D*=0 S00-S09=0.5 T5=0` ("*" is every slot) whose unnamed slots
    keep 1, the LoRA's own strength."""
    text = spec.strip()
    named = (shipped_lora_presets() if presets is None else presets).get(text)
    if named is not None and len(named) == len(schema):
        return [float(v) for v in named]
    if "=" in text:
        values = dict.fromkeys(schema.slots, 1.0)
        for token in text.replace(",", " ").split():
            target, _, raw = token.partition("=")
            values.update(dict.fromkeys(_slots(target, schema, spec), _number(raw, spec)))
        return [values[slot] for slot in schema.slots]
    values = [_number(v, spec) for v in text.split(",")]
    if len(values) != len(schema):
        raise BlockVectorError(
            f"LoRA blocks for {schema.label} take {len(schema)} values ({schema.describe()}) or SLOT=value "
            f"assignments, not {len(values)} values"
        )
    return values


def _slots(target: str, schema, spec: str) -> list[str]:
    slots = list(schema.slots)
    if target == "*":
        return slots
    if target.endswith("*") and any(s.startswith(target[:-1]) for s in slots):
        return [s for s in slots if s.startswith(target[:-1])]
    first, dash, last = target.partition("-")
    if dash and first in slots and last in slots and slots.index(first) <= slots.index(last):
        return slots[slots.index(first) : slots.index(last) + 1]
    if target in slots:
        return [target]
    raise BlockVectorError(f"LoRA blocks {spec!r}: {target!r} is no block of {schema.label} ({schema.describe()})")


def _number(raw: str, spec: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise BlockVectorError(f"LoRA blocks {spec!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise BlockVectorError(f"LoRA blocks {spec!r}: {raw!r} is not a finite number")
    return value
