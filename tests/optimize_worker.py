"""One WebUI (the test double) working on a shared study, as its own process: `python optimize_worker.py
ROOT STORAGE STUDY TRIALS MODEL_A MODEL_B MODEL_C`. ALLOY_HOME and ALLOY_INSTANCE come from the environment.
Prints the run's state as JSON on its last line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import WebUI  # noqa: E402

from lib_merge.app.optimize import runner  # noqa: E402
from lib_merge.app.optimize.desk import OptimizeDesk  # noqa: E402
from lib_merge.app.optimize.request import StudyGen, StudyRequest  # noqa: E402

runner.HEARTBEAT_SECONDS, runner.GRACE_SECONDS = 1, 3  # a dead worker is noticed in seconds, not minutes


def main(root: str, storage: str, study: str, trials: str, *models: str) -> None:
    webui = WebUI(Path(root), [Path(m) for m in models])
    a, b = webui.title("model_a"), webui.title("model_b")
    recipe = f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = weighted_sum(A, B, alpha=param("alpha"))\n'
    request = StudyRequest(study=study, recipe=recipe, space={"alpha": {"low": 0.0, "high": 1.0}},
                           trials=int(trials), sampler="tpe", seed=0, scorer="plugin:bright", storage=storage,
                           gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[]))  # fmt: skip
    run = OptimizeDesk(webui.workbench).start(request)
    print(json.dumps({"state": run.state, "error": run.error, "instance": run.instance}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
