"""The plot desk: check, run, reserve, the persistent queue and stop, for every surface.

The XYZ tab, the Dice tab and the HTTP routes all call one desk per workbench; nothing here
imports gradio, so the queue and stop are tested without building a UI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lib_merge.app.dice import DiceRoll, DiceSettings, elist_for_settings, fresh_seed, roll
from lib_merge.app.history import find_row, read_history
from lib_merge.app.plots.executor import idle_axes, merge_groups
from lib_merge.app.plots.plan import XYZPlan, expand, split_plan
from lib_merge.app.plots.queue import QueueRow, ReservationQueue
from lib_merge.app.plots.runner import PlotControl, PlotOutput, plan_context, run_plot
from lib_merge.app.workbench import Workbench
from lib_merge.errors import ParameterError
from lib_merge.paths import user_data_dir


def queue_path() -> Path:
    return user_data_dir() / "xyz_queue.json"


@dataclass
class PlanCheck:
    """What a plan will do: cells and merges per split part, and axes that change nothing."""

    counts: list[tuple[int, int]]  # (cells, merges) of each part
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        parts = "; ".join(f"{cells} cells, {merges} merges" for cells, merges in self.counts)
        return f"Plan OK: {parts}." + "".join(f" Warning: {w}." for w in self.warnings)


@dataclass
class PlotRun:
    output: PlotOutput
    queued: list[int]  # ids of the further split parts, reserved to run after this one

    def message(self) -> str:
        more = f" {len(self.queued)} more plots queued." if self.queued else ""
        return self.output.message() + more


class PlotDesk:
    def __init__(self, workbench: Workbench, queue_file: Path | None = None):
        self.workbench = workbench
        self.queue = ReservationQueue(queue_file or queue_path())
        self._control: PlotControl | None = None  # the plot running now (a direct run or the queue's)
        self._queue_stop = threading.Event()

    # -- plans ---------------------------------------------------------------------------------
    def split(self, plan: XYZPlan) -> list[XYZPlan]:
        """The plan's split parts (`|` in axis values), each expanded once, so a bad one is refused
        before anything runs or queues."""
        parts = split_plan(plan)
        for part in parts:
            expand(part, plan_context(self.workbench, part))
        return parts

    def check(self, plan: XYZPlan) -> PlanCheck:
        counts, warnings = [], []
        for part in split_plan(plan):
            cells = expand(part, plan_context(self.workbench, part))
            counts.append((len(cells), len(merge_groups(cells))))
            warnings += [w for w in idle_axes(part, cells) if w not in warnings]
        return PlanCheck(counts, warnings)

    # -- running -------------------------------------------------------------------------------
    def run(self, plan: XYZPlan, progress: Callable[[str], None] | None = None) -> PlotRun:
        """Run the first split part now and reserve the others behind it in the queue."""
        parts = self.split(plan)
        queued = [self.queue.add(part.to_dict(), part.label()).id for part in parts[1:]]
        return PlotRun(self._run_one(parts[0], progress), queued)

    def run_all(self, plan: XYZPlan) -> list[PlotOutput]:
        """Every split part, one after the other (the HTTP /xyz route waits for all of them)."""
        outputs = []
        for part in self.split(plan):
            outputs.append(self._run_one(part))
            if outputs[-1].stopped:
                break
        return outputs

    def _run_one(self, plan: XYZPlan, progress: Callable[[str], None] | None = None) -> PlotOutput:
        control = PlotControl(self.workbench)
        self._control = control
        try:
            return run_plot(self.workbench, plan, control, progress)
        finally:
            if self._control is control:
                self._control = None

    # -- the queue -----------------------------------------------------------------------------
    def reserve(self, plan: XYZPlan) -> list[int]:
        """Queue every split part; their row ids."""
        return [self.queue.add(part.to_dict(), part.label()).id for part in self.split(plan)]

    def rows(self) -> list[QueueRow]:
        return list(self.queue.rows)

    def start_queue(self) -> bool:
        """Run the waiting rows in the background; False when the queue runs already."""
        self._queue_stop.clear()
        return self.queue.start(lambda data: self._run_one(XYZPlan.from_dict(data)).message(), self._queue_stop)

    def queue_running(self) -> bool:
        return self.queue.running()

    # -- stop ----------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop the running plot (after its current cell), the queue and the running merge; what was running."""
        stopped = []
        if self.queue.running() and not self._queue_stop.is_set():
            stopped.append("queue")
        self._queue_stop.set()
        control = self._control
        if control is not None:
            stopped.append("plot")
            control.stop()  # also stops the workbench's merge
        elif self.workbench.busy():
            stopped.append("merge")
            self.workbench.stop()
        return stopped

    # -- Dice ----------------------------------------------------------------------------------
    def roll_dice(self, plan: XYZPlan, settings: DiceSettings) -> DiceRoll:
        """One roll for the plan's model A (the Dice tab's preview); seed -1 draws a fresh seed."""
        seed = settings.seed if settings.seed != -1 else fresh_seed()
        return roll(settings, plan_context(self.workbench, plan).schema, seed)

    def save_elist(self) -> Path:
        """The live merge's elemental list (its rolled Dice settings) as a file in <user data>/elists."""
        live = self.workbench.live
        if live is None:
            raise ParameterError("no Alloy merge is loaded: run a Dice roll or a merge first")
        row = find_row(read_history(self.workbench.history_path()).rows, live.history_id)
        return elist_for_settings(row.settings, live.base_path, user_data_dir() / "elists", row.id)
