"""A whole plot on the workbench: plan → cells → merges and generations → labelled grids on disk.

The UI, the HTTP API and the reservation queue all call `run_plot`; tests give it a workbench
over the WebUI double or a fake `PlotHost`.
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib_merge.app.forms import form_from_json
from lib_merge.app.history import find_row, read_history
from lib_merge.app.plots.axes import axis_type
from lib_merge.app.plots.executor import CellResult, MergedCell, run_cells
from lib_merge.app.plots.grid import GridLabels, draw_grid, pixel_diff_percent, save_grid
from lib_merge.app.plots.plan import Cell, PlanContext, XYZPlan, expand, swept_formula
from lib_merge.app.ports import GenResult, GenSettings, patchable
from lib_merge.app.workbench import MergeRequest, SaveRequest, Workbench
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import ParameterError
from lib_merge.io.source import file_schema
from lib_merge.io.tempfiles import write_file, write_text
from lib_merge.paths import user_data_dir
from lib_merge.recipe import parse_recipe
from lib_merge.recipe.nodes import primary_model

MAX_SINGLE_IMAGES = 100
WRAP = 10  # columns of a Dice plot with more rolls


class WorkbenchPlotHost:
    """The executor's view of a workbench: hash, merge into the live model, generate."""

    def __init__(self, workbench: Workbench, gen_base: GenSettings | None = None, save_models: bool = False):
        self.workbench = workbench
        self.save_models = save_models
        generation = workbench.host.generation  # its base: the WebUI's last txt2img run
        self.gen_base = gen_base or (generation.base_settings() if generation is not None else GenSettings())

    def _request(self, cell: Cell) -> MergeRequest:
        ui = {"xyz": " / ".join(label for label in cell.labels if label)}
        if cell.dice_seed is not None:
            ui["dice_seed"] = cell.dice_seed
        save = SaveRequest(dtype=self.workbench.host.config().save_dtype) if self.save_models else None
        # The cell's recipe was built (and checked) once, in the plan; its settings are what history logs.
        return MergeRequest(settings=cell.settings, root=cell.root, ui=ui, save=save)

    def merge(self, cell: Cell) -> MergedCell:
        outcome = self.workbench.merge(self._request(cell))
        return MergedCell(outcome.name, outcome.recipe_hash, outcome.history_id, outcome.merged)

    def generate(self, gen: GenSettings) -> GenResult:
        return self.workbench.generate(self.gen_base.overlay(gen))


def plan_context(workbench: Workbench, plan: XYZPlan) -> PlanContext:
    """The schema of model A (or of the recipe's first model), history and the recipes folder."""
    history_path = workbench.history_path()

    def history_recipe(ident: int) -> str:
        return find_row(read_history(history_path).rows, ident).recipe

    title = plan.merge.get("a")
    if not title and plan.recipe:
        title = primary_model(parse_recipe(plan.recipe)).path
    schema = file_schema(workbench.host.resolve_checkpoint(title)) if title else None
    return PlanContext(schema or SCHEMAS["sd1"], history_recipe, user_data_dir() / "recipes")


@dataclass
class PlotOutput:
    grids: list[Any]  # PIL images
    grid_paths: list[str]
    results: list[CellResult]
    merges: int
    stopped: bool
    diffs: dict[str, float] = field(default_factory=dict)  # elemental checker: item -> diff %

    def message(self) -> str:
        done = sum(r.status == "done" for r in self.results)
        text = f"XYZ plot: {done}/{len(self.results)} cells, {self.merges} merges"
        text += "; stopped." if self.stopped else "."
        if self.grid_paths:
            text += f" Grid: {', '.join(self.grid_paths)}."
        return text

    def singles(self) -> list[Any]:
        return [img for r in self.results for img in r.images][:MAX_SINGLE_IMAGES]


@dataclass
class PlotControl:
    """Stop for a running plot: ends after the current cell and stops a running merge."""

    workbench: Workbench | None = None
    event: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.event.set()
        if self.workbench is not None:
            self.workbench.stop()


def run_plot(
    workbench: Workbench,
    plan: XYZPlan,
    control: PlotControl | None = None,
    progress: Callable[[str], None] | None = None,
    gen_base: GenSettings | None = None,
    host: Any = None,
) -> PlotOutput:
    generation = workbench.host.generation
    if generation is None and host is None:
        raise ParameterError("XYZ plots need a host that generates images (the WebUI); this one only saves files")
    control = control or PlotControl(workbench)
    cells = expand(plan, plan_context(workbench, plan))
    plot_host = host or WorkbenchPlotHost(workbench, gen_base, plan.options.save_models)
    workbench.hold.check()  # a study owns the loaded model: answer now, not after it ends
    if not workbench.plot_lock.acquire(blocking=False):
        if progress:
            progress("waiting for the running plot to finish")
        workbench.plot_lock.acquire()
    try:
        result = run_cells(cells, plot_host, control.event, progress)
        if plan.options.restore_after and patchable(workbench.host) is not None:
            workbench.restore()
    finally:
        workbench.plot_lock.release()
    diffs = checker_diffs(result.cells)
    grids, paths = [], []
    if not plan.options.no_grid:
        folder = Path(generation.grid_folder()) if generation is not None else user_data_dir() / "xyz-grids"
        for image in assemble_grids(plan, result.cells, diffs, workbench.host.font_path()):
            grids.append(image)
            paths.append(str(save_grid(image, folder, plan.to_dict())))
        if plan.options.save_csv and paths:
            _write_cells_csv(Path(paths[0]).with_suffix(".csv"), result.cells, diffs)
        if diffs and paths:
            _write_checker_files(Path(paths[0]), result.cells, diffs, plan.options.checker_gif)
    return PlotOutput(grids, paths, result.cells, result.merges, result.stopped, diffs)


def checker_diffs(results: list[CellResult]) -> dict[str, float]:
    """Each checker cell against the baseline cell (index 0 on the checker axis) at the same other coordinates."""
    by_pos = {(r.cell.x, r.cell.y, r.cell.z): r for r in results}
    diffs = {}
    for r in results:
        if not r.cell.checker or not r.images or r.cell.checker_axis is None:
            continue
        where = [r.cell.x, r.cell.y, r.cell.z]
        where[r.cell.checker_axis] = 0
        base = by_pos.get(tuple(where))
        if base is not None and base.images:
            diffs[_cell_id(r.cell)] = pixel_diff_percent(r.images[0], base.images[0])
    return diffs


def _cell_id(cell: Cell) -> str:
    return f"{cell.x},{cell.y},{cell.z}"


def assemble_grids(plan: XYZPlan, results: list[CellResult], diffs: dict[str, float], font_path=None) -> list:
    """One grid per Z value and per batch index; X across, Y down (swapped on request)."""
    xs = max(r.cell.x for r in results) + 1
    ys = max(r.cell.y for r in results) + 1
    zs = max(r.cell.z for r in results) + 1
    batch = max((len(r.images) for r in results), default=1) or 1
    by_pos = {(r.cell.x, r.cell.y, r.cell.z): r for r in results}
    x_name = axis_type(plan.x.type).label
    y_name = axis_type(plan.y.type).label if plan.y else ""
    formula = swept_formula(plan, form_from_json(plan.merge) if plan.merge else None)
    grids = []
    for z in range(zs):
        for b in range(batch):
            x_labels = [_label(by_pos[(x, 0, z)], 0, diffs) for x in range(xs)]
            y_labels = [_label(by_pos[(0, y, z)], 1, diffs) for y in range(ys)] if plan.y else [""] * ys
            x_labels[0] = f"{x_name}: {x_labels[0]}"
            if plan.y:
                y_labels[0] = f"{y_name}: {y_labels[0]}"
            tiles = [[_tile(by_pos[(x, y, z)], b) for x in range(xs)] for y in range(ys)]
            if plan.x.type == "random" and not plan.y and xs > WRAP:  # Dice: 10 columns × ⌈N/10⌉ rows
                tiles = [tiles[0][i : i + WRAP] for i in range(0, xs, WRAP)]
                x_labels = [f"{x_name}: +1"] + [f"+{c + 1}" for c in range(1, WRAP)]
                y_labels = [f"rolls {i + 1}-{min(i + WRAP, xs)}" for i in range(0, xs, WRAP)]
            if plan.options.swap_xy:
                tiles = [list(col) for col in zip(*tiles, strict=True)]
                x_labels, y_labels = y_labels, x_labels
            corner = formula
            if plan.z:
                corner += f"\n{axis_type(plan.z.type).label}: {by_pos[(0, 0, z)].cell.labels[2]}"
            grids.append(draw_grid(tiles, GridLabels(x_labels, y_labels, corner), font_path))
    return grids


def _label(result: CellResult, axis: int, diffs: dict[str, float]) -> str:
    text = result.cell.labels[axis]
    if result.cell.dice_seed is not None and text.startswith("roll "):
        text += f" (seed {result.cell.dice_seed})"
    diff = diffs.get(_cell_id(result.cell))
    return f"{text}\nDiff: {diff:.2f}%" if diff is not None else text


def _tile(result: CellResult, index: int):
    if result.status != "done" or not result.images:
        return None
    return result.images[min(index, len(result.images) - 1)]


def _write_cells_csv(path: Path, results: list[CellResult], diffs: dict[str, float]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["cell", "labels", "recipe_hash", "history_id", "seed", "diff_percent"])
    for r in results:
        merged = r.merge
        writer.writerow(
            [
                _cell_id(r.cell),
                " / ".join(label for label in r.cell.labels if label),
                merged.recipe_hash if merged else "",
                merged.history_id if merged and merged.history_id is not None else "",
                r.cell.gen.seed,
                f"{diffs[_cell_id(r.cell)]:.2f}" if _cell_id(r.cell) in diffs else "",
            ]
        )
    write_text(str(path), buf.getvalue())


def _write_checker_files(grid: Path, results: list[CellResult], diffs: dict[str, float], gifs: bool) -> None:
    """`<grid>.checker.csv` (item, diff %) and, on request, `<grid>.<cell>.gif` (baseline, cell)."""
    by_pos = {(r.cell.x, r.cell.y, r.cell.z): r for r in results}
    path = grid.with_suffix(".checker.csv")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["item", "diff_percent"])
    for r in results:
        if _cell_id(r.cell) in diffs:
            writer.writerow([r.cell.checker, f"{diffs[_cell_id(r.cell)]:.2f}"])
    write_text(str(path), buf.getvalue())
    if not gifs:
        return
    for r in results:
        if _cell_id(r.cell) not in diffs:
            continue
        where = [r.cell.x, r.cell.y, r.cell.z]
        where[r.cell.checker_axis] = 0
        base = by_pos[tuple(where)].images[0]
        gif = grid.with_name(f"{grid.stem}.{r.cell.x}-{r.cell.y}-{r.cell.z}.gif")
        write_file(
            str(gif), lambda f, base=base, r=r: base.save(f, format="GIF", save_all=True, append_images=[r.images[0]],
                                                            duration=700, loop=0)
        )  # fmt: skip
