"""MBW presets: the shipped table (presets/mbw_presets.tsv) plus the user's own file of that name in user
data, which wins on a name and length."""

from __future__ import annotations

import difflib
from pathlib import Path

from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import PresetError
from lib_merge.paths import MBW_PRESETS, preset_files, shipped_presets_dir

SHIPPED_PRESETS = shipped_presets_dir() / MBW_PRESETS

# A 26-value vector fits SD1 and, through the 26 -> 20 mapping, SDXL.
_LENGTHS = {"sd1": (26,), "sdxl": (20, 26)}


def read_preset_file(path: Path, strict: bool = True) -> dict[tuple[str, int], list[float]]:
    """Parse a preset table; `NAME<TAB>values` and SuperMerger's `NAME:values` both read. Without
    `strict` (another tool's file), lines that are not all numbers are skipped."""
    presets: dict[tuple[str, int], list[float]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("preset_name"):
            continue
        sep = "\t" if "\t" in line else ":"
        name, _, values = line.partition(sep)
        try:
            numbers = [float(v) for v in values.split(",")]
        except ValueError:
            if not strict:
                continue
            raise PresetError(f"{path}: line {lineno}: preset {name.strip()!r} has a non-number value") from None
        presets[(name.strip(), len(numbers))] = numbers
    return presets


def load_presets() -> dict[tuple[str, int], list[float]]:
    """Every preset by (name, length): the shipped ones, then the user's."""
    shipped, user_file = preset_files(MBW_PRESETS)
    presets = read_preset_file(shipped)
    if user_file.is_file():
        presets.update(read_preset_file(user_file))
    return presets


def preset_names(schema: BlockSchema) -> list[str]:
    lengths = _LENGTHS.get(schema.id, (len(schema),))
    return sorted({name for name, n in load_presets() if n in lengths})


def lookup_preset(name: str, schema: BlockSchema) -> list[float]:
    """The preset's values for this schema: its own length first, then a mappable one."""
    presets = load_presets()
    for n in _LENGTHS.get(schema.id, (len(schema),)):
        if (name, n) in presets:
            return presets[(name, n)]
    close = difflib.get_close_matches(name, preset_names(schema), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise PresetError(f"unknown preset {name!r} for {schema.label}{hint}")
