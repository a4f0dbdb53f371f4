"""Optimize's two speed figures, each beside its baseline in the same run.

    python bench/optimize.py overhead [--trials 12]
    python bench/optimize.py samplers [--seeds 10] [--cap 3000]

overhead: a study's per-trial time outside generation and scoring against a repeated live merge of the
  same recipes. Needs bench/models/sd1_{a,b}.safetensors (python bench/make_models.py --arch sd1 --roles
  a b); the live model is a real torch module holding model A's full-size SD1.5 weights (fp16), on the
  stub host of bench/live_host.py whose generation returns 8×8 images at once; the scorer is a plugin that
  returns zeros. The study's trials (random sampler, alpha in [0, 1]) and then the same recipes merged one
  by one through Workbench.merge; the ratio is median trial overhead / median merge.
samplers: synthetic objectives with a known optimum over the 26 SD1 block weights, grouped in 4, 5 and 6
  groups (Optuna's samplers through Alloy's search space): how many trials each sampler needs to come
  within 0.05 of the optimum (score = 1 − RMS distance of the block vector from the target), the median
  over the seeds; TPE and CMA-ES against random search.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

GROUPINGS = {
    4: [["BASE", "IN00", "IN01", "IN02", "IN03", "IN04", "IN05"], ["IN06", "IN07", "IN08", "IN09", "IN10", "IN11"],
        ["M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"],
        ["OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"]],
    5: [["BASE", "IN00", "IN01", "IN02", "IN03", "IN04"], ["IN05", "IN06", "IN07", "IN08", "IN09"],
        ["IN10", "IN11", "M00", "OUT00", "OUT01"], ["OUT02", "OUT03", "OUT04", "OUT05", "OUT06"],
        ["OUT07", "OUT08", "OUT09", "OUT10", "OUT11"]],
    6: [["BASE", "IN00", "IN01", "IN02"], ["IN03", "IN04", "IN05", "IN06"], ["IN07", "IN08", "IN09", "IN10"],
        ["IN11", "M00", "OUT00", "OUT01", "OUT02"], ["OUT03", "OUT04", "OUT05", "OUT06", "OUT07"],
        ["OUT08", "OUT09", "OUT10", "OUT11"]],
}  # fmt: skip
REACHED = 0.95  # within 0.05 of the optimum's score of 1


def stop_when_reached(study, trial) -> None:
    if trial.value is not None and trial.value >= REACHED:
        study.stop()


def distance_score(space, dim, labels, schema, target):
    """Score = 1 − RMS distance of the trial's 26-value block vector from the target vector."""
    import numpy as np

    from lib_merge.app.optimize.space import block_vector

    def objective(trial) -> float:
        drawn = space.suggest(trial, schema)
        vector = np.array(block_vector(dim, [drawn[label] for label in labels], schema))
        return 1 - float(np.sqrt(np.mean((vector - target) ** 2)))

    return objective


def samplers(seeds: int, cap: int) -> None:
    import numpy as np
    import optuna

    from lib_merge.app.optimize.samplers import make_sampler
    from lib_merge.app.optimize.space import block_dimension_names, block_vector, parse_space
    from lib_merge.arch.blocks import SCHEMAS

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    schema = SCHEMAS["sd1"]
    print("| groups | sampler | trials to within 0.05 (median of seeds) | runs that got there | ratio to random |")
    print("|---|---|---|---|---|")
    for count, groups in GROUPINGS.items():
        space = parse_space({"w": {"blocks": True, "groups": groups}})
        dim = space.dimensions["w"]
        labels = block_dimension_names("w", dim, schema)
        needed: dict[str, list[int]] = {}
        for name in ("random", "tpe", "cmaes"):
            needed[name] = []
            for seed in range(seeds):
                target_rng = np.random.default_rng(1000 + seed)  # the optimum: one value per group
                target = block_vector(dim, list(target_rng.uniform(0.1, 0.9, len(labels))), schema)

                objective = distance_score(space, dim, labels, schema, np.array(target))
                study = optuna.create_study(direction="maximize", sampler=make_sampler(name, seed, space, schema))
                study.optimize(objective, n_trials=cap, callbacks=[stop_when_reached])
                reached = next((t.number + 1 for t in study.trials if t.value is not None and t.value >= REACHED), cap)
                needed[name].append(reached)
        base = statistics.median(needed["random"])
        for name, runs in needed.items():
            got = sum(r < cap for r in runs)
            median = statistics.median(runs)
            print(f"| {count} | {name} | {median:g} | {got}/{len(runs)} | {median / base:.2f} |", flush=True)


def overhead(trials: int) -> None:
    import torch
    from live_host import StubHost, load_live_module

    from lib_merge.app.optimize.desk import OptimizeDesk
    from lib_merge.app.optimize.request import StudyGen, StudyRequest
    from lib_merge.app.workbench import MergeRequest, Workbench
    from lib_merge.recipe.compose import compose

    models = ROOT / "bench" / "models"
    missing = [p for p in (models / f"sd1_{r}.safetensors" for r in "ab") if not p.exists()]
    if missing:
        sys.exit(f"missing {', '.join(map(str, missing))}: run python bench/make_models.py --arch sd1 --roles a b")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ALLOY_HOME"] = tmp
        (Path(tmp) / "scorers").mkdir()
        (Path(tmp) / "scorers" / "zero.py").write_text("def score(images, prompts):\n    return [0.0] * len(images)\n")
        module = load_live_module(models / "sd1_a.safetensors", torch.float16)
        workbench = Workbench(StubHost(models, module, "sd1_a.safetensors", Path(tmp), "auto"))
        recipe = ('alloy-recipe 1\nA = model("sd1_a.safetensors")\nB = model("sd1_b.safetensors")\n'
                  'merged = weighted_sum(A, B, alpha=param("alpha"))\n')  # fmt: skip
        workbench.merge(MergeRequest(recipe=recipe.replace('param("alpha")', "0.05")))  # backups and hashes once
        desk = OptimizeDesk(workbench)
        request = StudyRequest("bench", recipe, {"alpha": {"low": 0.0, "high": 1.0}}, trials=trials,
                               sampler="random", seed=0, scorer="plugin:zero",
                               gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[]),
                               restore_after=False)  # fmt: skip
        run = desk.start(request)
        if run.state != "done":
            sys.exit(f"the study ended {run.state}: {run.error}")
        import optuna

        study = optuna.load_study(study_name="bench", storage=run.plan.storage)
        outside, params = [], []
        for trial in study.trials:
            times = trial.user_attrs["times"]
            outside.append(trial.duration.total_seconds() - times["generate"] - times["score"])
            params.append(trial.params)
        plain = []
        for drawn in params:
            root = compose(run.plan.template, {"alpha": drawn["alpha"]})
            started = time.perf_counter()
            workbench.merge(MergeRequest(root=root, log=False))
            plain.append(time.perf_counter() - started)
    trial_median, merge_median = statistics.median(outside), statistics.median(plain)
    print(f"{trials} trials; per-trial time outside generation and scoring: median {trial_median:.3f} s "
          f"(min {min(outside):.3f}); the same recipes merged one by one: median {merge_median:.3f} s "
          f"(min {min(plain):.3f}); ratio {trial_median / merge_median:.3f}×")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--trials", type=int, default=12)
    s = sub.add_parser("samplers")
    s.add_argument("--seeds", type=int, default=10)
    s.add_argument("--cap", type=int, default=3000)
    args = ap.parse_args()
    if args.what == "overhead":
        overhead(args.trials)
    else:
        samplers(args.seeds, args.cap)


if __name__ == "__main__":
    main()
