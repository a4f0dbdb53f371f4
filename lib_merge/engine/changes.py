"""The elemental "print change" log: every key whose α an elemental entry overrides."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from lib_merge.engine.bind import BoundRecipe
from lib_merge.engine.plan import param_at, slots_of
from lib_merge.io.tempfiles import write_text
from lib_merge.recipe.nodes import walk_merges
from lib_merge.recipe.vectors import format_number


@dataclass(frozen=True)
class Change:
    key: str
    slot: str
    old: float
    new: float
    entry: int  # 1-based position of the entry that set it

    def line(self) -> str:
        return f"{self.key}  {self.slot}  {format_number(self.old)} → {format_number(self.new)}  (entry {self.entry})"


def elemental_changes(bound: BoundRecipe) -> list[Change]:
    """Keys of model A in a block whose α an elemental entry sets, in file order, per merge step."""
    if bound.schema is None:
        return []
    changes = []
    for node in walk_merges(bound.root):
        rules = node.params.get("elemental")
        if rules is None or "alpha" not in node.params:
            continue
        for key in bound.primary.keys:
            slot = bound.schema.slot_of(key)
            if slot is None:
                continue
            index = rules.last_match(key, slots_of(key, slot, bound))
            if index is None:
                continue
            old = param_at(node.params["alpha"], slot, key, bound)
            if isinstance(old, tuple):  # one α per model (task arithmetic): not a single number to log
                continue
            new = rules.alpha_for(key, slots_of(key, slot, bound), old)
            changes.append(Change(key, slot, float(old), float(new), index + 1))
    return changes


def write_changes_csv(path: str, changes: list[Change], overwrite: bool = False) -> str:
    """The list as CSV; an existing file is replaced only with `overwrite`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "slot", "alpha_old", "alpha_new", "entry"])
    writer.writerows([c.key, c.slot, format_number(c.old), format_number(c.new), c.entry] for c in changes)
    return write_text(path, buf.getvalue(), overwrite)
