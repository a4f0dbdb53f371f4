"""Running a plot's cells: one merge per distinct recipe, then every generation of it.

Cells are grouped by their recipe, so a seed or prompt axis never re-merges, on whichever axis it
lies; a recipe equal to the live model's is not merged again. Stop is checked between cells.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from lib_merge.app.plots.axes import axis_type
from lib_merge.app.plots.plan import AXES, Cell, XYZPlan
from lib_merge.app.ports import GenResult, GenSettings
from lib_merge.errors import AlloyError, Cancelled, PlanError


@dataclass
class MergedCell:
    name: str
    recipe_hash: str
    history_id: int | None
    fresh: bool = True  # False: the live model was this merge already


class PlotHost(Protocol):
    """What the executor needs of a host (the workbench adapter, or a fake one in tests)."""

    def merge(self, cell: Cell) -> MergedCell:
        """Make the cell's merge the live model (nothing to do when it is already)."""
        ...

    def generate(self, gen: GenSettings) -> GenResult: ...


@dataclass
class CellResult:
    cell: Cell
    status: str = "waiting"  # done, stopped
    images: list[Any] = field(default_factory=list)
    infotext: str = ""
    merge: MergedCell | None = None


@dataclass
class PlotResult:
    cells: list[CellResult]
    merges: int
    stopped: bool


def merge_groups(cells: list[Cell]) -> list[list[int]]:
    """Cell indices grouped by recipe, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, cell in enumerate(cells):
        groups.setdefault(cell.merge_key, []).append(index)
    return list(groups.values())


def idle_axes(plan: XYZPlan, cells: list[Cell]) -> list[str]:
    """Warnings for merge axes whose values all give the same merge wherever the other axes stand
    (for example alpha under a block vector that sets every block)."""
    warnings = []
    for name, spec in plan.axes():
        index = AXES.index(name)
        kind = axis_type(spec.type).kind
        positions = {(c.x, c.y, c.z)[index] for c in cells}
        if kind == "gen" or len(positions) < 2:
            continue
        lines: dict[tuple, set[str]] = {}
        for c in cells:
            others = tuple(v for i, v in enumerate((c.x, c.y, c.z)) if i != index)
            lines.setdefault(others, set()).add(c.merge_key)
        if all(len(keys) == 1 for keys in lines.values()):
            warnings.append(
                f"{name.upper()} axis {spec.type} has no effect: each of its values gives the same merge "
                "(is every block set by a block vector, or is this value already the setting?)"
            )
    return warnings


def run_cells(
    cells: list[Cell],
    host: PlotHost,
    stop: threading.Event,
    progress: Callable[[str], None] | None = None,
) -> PlotResult:
    results = [CellResult(cell) for cell in cells]
    merges = 0
    done = 0
    for group in merge_groups(cells):
        if stop.is_set():
            break
        first = cells[group[0]]
        try:
            merged = host.merge(first)
            merges += merged.fresh
        except Cancelled:
            break
        except AlloyError as e:
            raise PlanError(f"cell {_where(first)}: {e}") from None
        made: dict[str, GenResult] = {}  # equal generation settings under one merge: one image set
        for batch in _batches(cells, group):
            if stop.is_set():
                break
            gen = cells[batch[0]].gen
            if len(batch) > 1:  # prompt batch: every prompt of the axis in one batch, one image each
                gen = replace(gen, prompt=[cells[i].gen.prompt for i in batch], batch_size=len(batch), n_iter=1)
            wanted = repr(gen)
            generated = made.get(wanted) or host.generate(gen)
            made[wanted] = generated
            for position, index in enumerate(batch):
                result = results[index]
                result.merge = merged
                images = list(generated.images)
                result.images = images[position : position + 1] if len(batch) > 1 else images
                result.infotext, result.status = generated.infotext, "done"
                done += 1
                if progress:
                    progress(f"cell {done}/{len(cells)}: {_where(cells[index])}")
    stopped = any(r.status != "done" for r in results)
    for r in results:
        if r.status != "done":
            r.status = "stopped"
    return PlotResult(results, merges, stopped)


def _batches(cells: list[Cell], group: list[int]) -> list[list[int]]:
    """A merge group's cells as generation calls: prompt-batch cells that differ only in prompt go together."""
    batches: dict[str, list[int]] = {}
    order: list[list[int]] = []
    for index in group:
        cell = cells[index]
        if not cell.batch_prompt:
            order.append([index])
            continue
        key = repr(replace(cell.gen, prompt=None))
        if key not in batches:
            batches[key] = []
            order.append(batches[key])
        batches[key].append(index)
    return order


def _where(cell: Cell) -> str:
    return " / ".join(label for label in cell.labels if label) or "cell"
