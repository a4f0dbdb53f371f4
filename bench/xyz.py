"""Cost of an XYZ plot's merges against the same merges run one by one, generation stubbed out.

    python bench/xyz.py [--repeat 2]

Needs bench/models/sd1_{a,b}.safetensors (python bench/make_models.py --arch sd1 --roles a b).
Both sides patch one live model in place: a real torch module holding model A's full-size SD1.5
weights (fp16, as bench/live_host.py builds it), through one Workbench with the RAM cache at its
"auto" budget, on a host whose generate returns an 8×8 image at once.
- "9 merges": X = alpha (0.2, 0.5, 0.8) × Y = mbw alpha (three vectors): nine distinct recipes;
  baseline: the same nine MergeSettings through Workbench.merge one after another.
- "3 merges": X = alpha × Y = seed (1, 2, 3): the plot merges three times, the baseline nine.
A warm-up merge first makes the backups of the live model and hashes the inputs for both sides.
Each repeat runs the plot and its baseline back to back; best and median ratios are reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from live_host import StubHost, load_live_module  # noqa: E402

from lib_merge.app.plots.plan import PlanContext, XYZPlan, expand  # noqa: E402
from lib_merge.app.plots.runner import run_plot  # noqa: E402
from lib_merge.app.workbench import MergeRequest, Workbench  # noqa: E402
from lib_merge.recipe.form import MergeSettings  # noqa: E402

MODELS = ROOT / "bench" / "models"
ALPHAS = "0.2, 0.5, 0.8"
VECTORS = "IN00-IN11=0.0\nM00=1.0\nOUT00-OUT11=1.0"  # named: the blocks not named take the X alpha


def plan_for(y_type: str, y_values: str) -> XYZPlan:
    return XYZPlan.from_dict(
        {
            "x": {"type": "alpha", "values": ALPHAS},
            "y": {"type": y_type, "values": y_values},
            "merge": {"a": "sd1_a.safetensors", "b": "sd1_b.safetensors"},
            "gen": {"seed": 1},
        }
    )


def plain_settings(workbench: Workbench) -> list[MergeSettings]:
    """The nine settings of the 9-merge plot, as the plot itself expands them."""
    from lib_merge.app.plots.runner import plan_context

    plan = plan_for("mbw_alpha", VECTORS)
    context: PlanContext = plan_context(workbench, plan)
    return [cell.settings for cell in expand(plan, context)]


def time_plain(workbench: Workbench, settings: list[MergeSettings]) -> float:
    start = time.perf_counter()
    for s in settings:
        workbench.merge(MergeRequest(settings=s))
    return time.perf_counter() - start


def time_plot(workbench: Workbench, plan: XYZPlan) -> tuple[float, int]:
    start = time.perf_counter()
    out = run_plot(workbench, plan)
    return time.perf_counter() - start, out.merges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    missing = [p for p in (MODELS / f"sd1_{r}.safetensors" for r in "ab") if not p.exists()]
    if missing:
        sys.exit(f"missing {', '.join(map(str, missing))}: run python bench/make_models.py --arch sd1 --roles a b")
    with tempfile.TemporaryDirectory() as tmp:
        module = load_live_module(MODELS / "sd1_a.safetensors", torch.float16)
        workbench = Workbench(StubHost(MODELS, module, "sd1_a.safetensors", Path(tmp), "auto"))
        settings = plain_settings(workbench)
        workbench.merge(MergeRequest(settings=MergeSettings("sd1_a.safetensors", "sd1_b.safetensors", alpha=0.1)))
        rows = {"9 merges": ("mbw_alpha", VECTORS), "3 merges": ("seed", "1, 2, 3")}
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in rows}
        for _ in range(args.repeat):
            for name, (y_type, y_values) in rows.items():
                plot_seconds, merges = time_plot(workbench, plan_for(y_type, y_values))
                plain_seconds = time_plain(workbench, settings)
                results[name].append((plot_seconds, plain_seconds, merges))
                print(f"{name}: plot {plot_seconds:.2f} s ({merges} merges), 9 plain merges {plain_seconds:.2f} s",
                      flush=True)  # fmt: skip
    print("\n| plot | merges | plot s (best) | per cell s | 9 plain merges s (best) | per merge s | ratio best/best "
          "| median paired ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        plot_best, plain_best = min(r[0] for r in runs), min(r[1] for r in runs)
        paired = statistics.median(r[0] / r[1] for r in runs)
        cells = f"{plot_best:.2f} | {plot_best / 9:.2f} | {plain_best:.2f} | {plain_best / 9:.2f}"
        print(f"| {name} | {runs[0][2]} | {cells} | {plot_best / plain_best:.3f}× | {paired:.3f}× |")


if __name__ == "__main__":
    main()
