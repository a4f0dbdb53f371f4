"""`xyz run --webui URL [--webui URL …] PLAN -o GRID.png`: an XYZ plot fanned out over running WebUIs.

The plan is the JSON of POST /alloy/v1/xyz. The cells are grouped by merge and each group runs on whichever
WebUI is free; the grid is assembled here, with the same cells as the plot run in one WebUI. The last stdout
line is the (first) grid's path.
"""

from __future__ import annotations

import json
import os
import sys

from lib_merge.surfaces.cli.common import check_new_output
from lib_merge.surfaces.cli.errors import UsageError


def cmd_xyz_run(args) -> int:
    from lib_merge.app.plots.plan import XYZPlan, split_plan
    from lib_merge.app.plots.remote import fan_out_plot
    from lib_merge.app.webui_client import WebUIClient
    from lib_merge.io.tempfiles import write_file

    if not args.output.lower().endswith(".png"):
        raise UsageError(f"{args.output}: the grid is a .png file")
    check_new_output(args.output, args.overwrite)
    plans = split_plan(XYZPlan.from_dict(_plan(args.plan)))
    clients = [WebUIClient(url, args.auth) for url in args.webui]
    grids, stopped = [], False
    for number, plan in enumerate(plans, 1):
        fanned = fan_out_plot(plan, clients, progress=lambda text: print(text, file=sys.stderr, flush=True))
        grids += fanned.grids
        stopped = stopped or fanned.stopped
        done = sum(r.status == "done" for r in fanned.results)
        shares = ", ".join(f"{url} {count}" for url, count in fanned.ran_on.items())
        print(f"plot {number}/{len(plans)}: {done}/{len(fanned.results)} cells, {fanned.merges} merges "
              f"(merge groups per WebUI: {shares})")  # fmt: skip
    stem = args.output[: -len(".png")]
    paths = [args.output] + [f"{stem}-{i}.png" for i in range(2, len(grids) + 1)]
    for path in paths[1:]:
        check_new_output(path, args.overwrite)
    for grid, path in zip(grids, paths, strict=False):
        write_file(path, lambda f, grid=grid: grid.save(f, format="PNG"), overwrite=args.overwrite)
    for path in paths[: len(grids)]:
        print(os.path.abspath(path))
    return 1 if stopped else 0


def _plan(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read plan {path}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise UsageError(f"{path}: not JSON ({str(e) or 'nested too deeply'})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a plan is a JSON object")
    return data
