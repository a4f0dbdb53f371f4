"""An XYZ plot fanned out over several running WebUIs: the cells grouped by merge, each group run on whichever
WebUI is free (its merge through /alloy/v1/merge, its images through /sdapi/v1/txt2img), every WebUI given the
first one's generation settings, and the grid assembled here from the same cells as in one WebUI."""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

from lib_merge.app.plots.executor import CellResult, MergedCell, PlotResult, merge_groups, run_cells
from lib_merge.app.plots.plan import Cell, PlanContext, XYZPlan, expand
from lib_merge.app.plots.runner import assemble_grids, checker_diffs
from lib_merge.app.ports import GenResult, GenSettings
from lib_merge.app.webui_client import WebUIClient, check_webuis, run_each
from lib_merge.arch.blocks import schema_for
from lib_merge.errors import AlloyError, ParameterError, PlanError
from lib_merge.paths import user_data_dir
from lib_merge.recipe import parse_recipe
from lib_merge.recipe.form import compile_form
from lib_merge.recipe.nodes import primary_model
from lib_merge.recipe.printer import print_recipe


class RemotePlotHost:
    """The executor's view of one WebUI: merge a cell's recipe into its loaded model, generate on it."""

    def __init__(self, client: WebUIClient, gen_base: GenSettings) -> None:
        self.client = client
        self.gen_base = gen_base

    def merge(self, cell: Cell) -> MergedCell:
        answer = self.client.merge(cell_recipe(cell))
        return MergedCell(answer.get("name") or "", answer["hash"], answer.get("history_id"))

    def generate(self, gen: GenSettings) -> GenResult:
        return GenResult(self.client.generate(self.gen_base.overlay(gen)), "")


def cell_recipe(cell: Cell) -> str:
    """The cell's recipe as text, its models by the WebUI's titles (the WebUI resolves them)."""
    if cell.root is not None:
        return print_recipe(cell.root)
    if cell.recipe:
        return print_recipe(parse_recipe(cell.recipe))
    return print_recipe(compile_form(cell.settings))


@dataclass
class FannedPlot:
    grids: list  # PIL images
    results: list[CellResult]
    merges: int
    stopped: bool
    ran_on: dict[str, int]  # WebUI -> merge groups it ran


def fan_out_plot(
    plan: XYZPlan,
    clients: list[WebUIClient],
    stop: threading.Event | None = None,
    progress: Callable[[str], None] | None = None,
) -> FannedPlot:
    check_webuis(clients)
    stop = stop or threading.Event()
    first = clients[0]
    cells = expand(plan, _context(plan, first))
    gen_base = first.gen_defaults()
    groups: queue.SimpleQueue = queue.SimpleQueue()
    for group in merge_groups(cells):
        groups.put(group)
    results: dict[int, CellResult] = {}
    ran_on = {c.url: 0 for c in clients}
    done_cells = [0]

    def cell_done(text: str) -> None:  # "cell 1/2: …" of one merge group as "cell 5/8: …" of the plot
        with lock:
            done_cells[0] += 1
            if progress:
                progress(f"cell {done_cells[0]}/{len(cells)}: {text.split(': ', 1)[-1]}")

    errors: list[str] = []
    merges = [0]
    lock = threading.Lock()

    def work(client: WebUIClient) -> None:
        host = RemotePlotHost(client, gen_base)
        while not stop.is_set():
            try:
                group = groups.get_nowait()
            except queue.Empty:
                return
            try:
                done: PlotResult = run_cells([cells[i] for i in group], host, stop, cell_done)
            except (AlloyError, PlanError) as e:
                with lock:
                    errors.append(f"{client.url}: {e}")
                stop.set()
                return
            with lock:
                results.update(zip(group, done.cells, strict=True))
                merges[0] += done.merges
                ran_on[client.url] += 1

    try:
        run_each([lambda c=c: work(c) for c in clients], "alloy-fan", stop.set)  # Ctrl-C: after the current cell
    finally:
        if plan.options.restore_after:
            for client in clients:
                try:
                    client.restore()
                except AlloyError as e:
                    errors.append(f"{client.url}: {e}")
    if errors:
        raise ParameterError("; ".join(errors))
    ordered = [results.get(i) or CellResult(cell, "stopped") for i, cell in enumerate(cells)]
    stopped = any(r.status != "done" for r in ordered)
    grids = [] if plan.options.no_grid else _grids(plan, ordered, first)
    return FannedPlot(grids, ordered, merges[0], stopped, ran_on)


def _grids(plan: XYZPlan, results: list[CellResult], first: WebUIClient) -> list:
    """The grids drawn as the first WebUI draws them: with its label font (in a temporary file here)."""
    font = first.font()
    if font is None:
        return assemble_grids(plan, results, checker_diffs(results))
    with tempfile.TemporaryDirectory(prefix="alloy-font-") as folder:
        path = os.path.join(folder, "labels.ttf")
        with open(path, "wb") as f:
            f.write(font)
        return assemble_grids(plan, results, checker_diffs(results), path)


def _context(plan: XYZPlan, first: WebUIClient) -> PlanContext:
    """Model A's schema and the history rows (merge id axes) from the first WebUI; recipes from this machine."""
    title = plan.merge.get("a") if plan.merge else None
    if not title and plan.recipe:
        title = primary_model(parse_recipe(plan.recipe)).path
    schema = schema_for(first.arch(title)) if title else None

    def history_recipe(ident: int) -> str:
        rows = first.call("GET", f"/alloy/v1/history?q=id:{int(ident)}")["rows"]
        found = [r for r in rows if r.get("id") == ident]
        if not found:
            raise PlanError(f"no history row {ident} in {first.url}")
        return found[0]["recipe"]

    return PlanContext(schema or schema_for("sd1"), history_recipe, user_data_dir() / "recipes")
