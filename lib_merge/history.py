"""The merge history (SPEC §14): an append-only CSV log that survives damage and searches all rows.

Rows are only ever appended (one write, flush, fsync); a failed merge appends nothing.
Reading skips rows it cannot parse and says which, so one bad line never hides the rest.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lib_merge.errors import ParameterError
from lib_merge.paths import user_data_dir

COLUMNS = ("id", "time", "name", "recipe_hash", "models", "settings", "output", "recipe")


@dataclass
class HistoryRow:
    id: int
    time: str
    name: str
    recipe_hash: str
    models: str  # "A=base.safetensors [6ce0161689];B=..."
    settings: dict
    output: str  # saved path or "not saved"
    recipe: str

    def cells(self) -> list[str]:
        return [
            str(self.id),
            self.time,
            self.name,
            self.recipe_hash,
            self.models,
            json.dumps(self.settings, sort_keys=True, ensure_ascii=False),
            self.output,
            self.recipe,
        ]

    def text(self) -> str:
        return "\n".join(self.cells())


@dataclass
class HistoryLog:
    rows: list[HistoryRow]
    skipped: list[str] = field(default_factory=list)  # "history.csv line 57 skipped: bad JSON in settings"


def history_file() -> Path:
    return user_data_dir() / "history.csv"


_DEFAULTS = {"name": "", "recipe_hash": "", "models": "", "settings": "{}", "output": "not saved", "recipe": ""}


def read_history(path: Path | None = None) -> HistoryLog:
    """Rows of a history file; an older header (other or fewer columns) is mapped by column name."""
    path = path or history_file()
    if not path.exists():
        return HistoryLog([])
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    reader = csv.reader(io.StringIO(text))
    rows: list[HistoryRow] = []
    skipped: list[str] = []
    columns: list[str] | None = None
    for record in reader:
        line = reader.line_num
        if columns is None:
            columns = [c.strip().lower() for c in record]
            if "id" not in columns:
                skipped.append(f"{path.name} line {line}: no 'id' column, file not read")
                return HistoryLog([], skipped)
            continue
        if not record:
            continue
        if len(record) != len(columns):
            skipped.append(f"{path.name} line {line} skipped: {len(record)} columns instead of {len(columns)}")
            continue
        values = dict(zip(columns, record, strict=True))
        cells = [values.get(c, _DEFAULTS.get(c, "")) for c in COLUMNS]
        reason = _row_problem(cells)
        if reason:
            skipped.append(f"{path.name} line {line} skipped: {reason}")
            continue
        rows.append(
            HistoryRow(int(cells[0]), cells[1], cells[2], cells[3], cells[4], json.loads(cells[5]), cells[6], cells[7])
        )
    return HistoryLog(rows, skipped)


def _row_problem(record: list[str]) -> str:
    if not record[0].strip().isdigit():
        return f"id {record[0]!r} is not a whole number"
    try:
        settings = json.loads(record[5])
    except ValueError:
        return "bad JSON in settings"
    if not isinstance(settings, dict):
        return "settings is not a JSON object"
    return ""


def append_history(
    name: str, recipe_hash: str, models: str, settings: dict, output: str, recipe: str, path: Path | None = None
) -> HistoryRow:
    """Append one row with the next id; the file is created with its header when missing."""
    path = path or history_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = read_history(path).rows
    row = HistoryRow(
        id=max((r.id for r in existing), default=0) + 1,
        time=datetime.datetime.now().isoformat(timespec="seconds"),
        name=name,
        recipe_hash=recipe_hash,
        models=models,
        settings=settings,
        output=output,
        recipe=recipe,
    )
    buf = io.StringIO()
    writer = csv.writer(buf, dialect="excel", lineterminator="\n")
    new_file = not path.exists() or path.stat().st_size == 0
    if new_file:
        writer.writerow(COLUMNS)
    writer.writerow(row.cells())
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    return row


def find_row(rows: list[HistoryRow], ident: int) -> HistoryRow:
    """Row by id; -1 is the last row, -2 the one before."""
    if ident < 0 and len(rows) >= -ident:
        return rows[ident]
    for r in rows:
        if r.id == ident:
            return r
    raise ParameterError(f"no history row with id {ident}")


def search_history(rows: list[HistoryRow], query: str, any_word: bool = False) -> list[HistoryRow]:
    """Case-insensitive search over whole rows: all words (or any, with `any_word`); quoted phrases
    stay together; `id:12` matches the id and `hash:1a2b` the start of the recipe hash."""
    try:
        words = shlex.split(query)
    except ValueError:
        words = query.split()
    if not words:
        return list(rows)
    tests = [_word_test(w) for w in words]
    combine = any if any_word else all
    return [r for r in rows if combine(t(r) for t in tests)]


def _word_test(word: str):
    low = word.lower()
    if low.startswith("id:") and low[3:].lstrip("-").isdigit():
        return lambda r: r.id == int(low[3:])
    if low.startswith("hash:") and len(low) > 5:
        return lambda r: r.recipe_hash.lower().startswith(low[5:])
    return lambda r: low in r.text().lower()


_SUPERMERGER_MODES = {
    "weight sum": "weighted_sum",
    "add difference": "add_difference",
    "triple sum": "triple_sum",
    "sum twice": "sum_twice",
}


def import_supermerger(source: Path, path: Path | None = None) -> tuple[int, list[str]]:
    """Append the rows of SuperMerger's mergehistory.csv (as settings, with a recipe where one
    can be written) to Alloy's history; returns (rows imported, rows skipped with reasons)."""
    from lib_merge.recipe import print_recipe
    from lib_merge.settings import MergeSettings, build_recipe

    try:
        with open(source, encoding="utf-8", newline="") as f:
            records = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ParameterError(f"cannot read SuperMerger history {source}: {e}") from None
    imported, skipped = 0, []
    for n, rec in enumerate(records, 2):
        rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
        label = rec.get("mode", "").split(":")[0].strip().lower()
        mode = _SUPERMERGER_MODES.get(label)
        if mode is None or not rec.get("model A"):
            skipped.append(f"{source.name} line {n} skipped: mode {rec.get('mode', '')!r} or model A missing")
            continue
        use_mbw = rec.get("use MBW", "").lower() == "true"
        settings = {
            "a": rec["model A"], "b": rec.get("model B") or None, "c": rec.get("model C") or None, "mode": mode,
            "alpha": _number(rec.get("alpha")), "beta": _number(rec.get("beta")), "use_mbw": use_mbw,
            "blocks": rec.get("weights alpha") if use_mbw else None,
            "imported_from": f"SuperMerger id {rec.get('ID', '?')} ({rec.get('time', '')})",
        }  # fmt: skip
        try:
            uses = MergeSettings(settings["a"], settings["b"] or "", mode, settings["c"], settings["alpha"])
            recipe = print_recipe(build_recipe(uses)) if settings["b"] else ""
        except Exception:  # noqa: BLE001 - the settings are kept even when no recipe can be written
            recipe = ""
        models = ";".join(f"{r}={settings[r.lower()]}" for r in "ABC" if settings[r.lower()])
        append_history(rec.get("name", ""), "", models, settings, "not saved", recipe, path)
        imported += 1
    return imported, skipped


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
