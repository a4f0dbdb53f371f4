"""XYZ presets by name: `{"name": {"x": {"type", "values"}, "y": …, "z": …}}` in one JSON file.

The shipped file (presets/xyz_presets.json) is read first; the user's file, which save, delete and import
write, adds to it and wins on a name. SuperMerger's `xyzpresets.json` imports with its type labels mapped
to Alloy's ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from lib_merge.app.plots.axes import axis_type
from lib_merge.errors import ParameterError
from lib_merge.io.tempfiles import write_text
from lib_merge.paths import XYZ_PRESETS, preset_files


def load_presets(path: Path) -> dict[str, dict]:
    if not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ParameterError(f"{path}: not readable XYZ presets ({e})") from None
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: XYZ presets must be a JSON object of name -> axes")
    return data


def all_presets(path: Path) -> dict[str, dict]:
    """The shipped presets, then those of the user's file at `path`."""
    return {**load_presets(preset_files(XYZ_PRESETS)[0]), **load_presets(path)}


def _write(path: Path, presets: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(str(path), json.dumps(presets, indent=1, sort_keys=True))


def _normal(axes: dict) -> dict:
    out = {}
    for name in ("x", "y", "z"):
        axis = axes.get(name) or {}
        if str(axis.get("type") or "").lower() not in ("", "none"):
            out[name] = {"type": axis_type(str(axis["type"])).id, "values": str(axis.get("values", ""))}
    if "x" not in out:
        raise ParameterError("an XYZ preset needs at least an X axis")
    return out


def save_preset(path: Path, name: str, axes: dict, overwrite: bool = False) -> None:
    name = name.strip()
    if not name:
        raise ParameterError("give the preset a name")
    if name in all_presets(path) and not overwrite:
        raise ParameterError(f"an XYZ preset named {name!r} exists; tick overwrite to replace it")
    presets = load_presets(path)
    presets[name] = _normal(axes)
    _write(path, presets)


def get_preset(path: Path, name: str) -> dict:
    presets = all_presets(path)
    if name not in presets:
        raise ParameterError(f"no XYZ preset named {name!r}; saved: {', '.join(sorted(presets)) or 'none'}")
    return presets[name]


def delete_preset(path: Path, name: str) -> None:
    presets = load_presets(path)
    if presets.pop(name, None) is None:
        if name in all_presets(path):
            raise ParameterError(f"{name!r} is a shipped XYZ preset; saving one of that name replaces it")
        raise ParameterError(f"no XYZ preset named {name!r}")
    _write(path, presets)


SUPERMERGER_PRESETS = "xyzpresets.json"


def import_supermerger_presets(source: Path, path: Path) -> list[str]:
    """SuperMerger's presets (`{"name": {"xtype": …, "xmen": …, …}}` or Alloy's own shape), merged in."""
    raw = load_presets(source)
    presets = load_presets(path)
    imported = []
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        if "x" in entry:
            axes = entry
        else:
            axes = {
                axis: {"type": entry.get(f"{axis}type", ""), "values": entry.get(f"{axis}men", "")}
                for axis in ("x", "y", "z")
            }
        presets[name] = _normal(axes)
        imported.append(name)
    _write(path, presets)
    return imported
