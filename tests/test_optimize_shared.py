"""A study shared by two WebUIs (two processes of the test double) through a real PostgreSQL server: each
trial is claimed once, the study stops at its total, each trial names its instance, and the trial of a
worker killed mid-trial is failed and run again by the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).parent / "optimize_worker.py"

# Brightness, a little slowly; a worker given HANG_AFTER hangs in its scorer after that many calls (the test
# kills it there, mid-trial).
HANGING = """import os, time
from pathlib import Path
import numpy as np
import pytest

def score(images, prompts):
    home = Path(os.environ["ALLOY_HOME"])
    calls = home / "calls"
    n = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(n))
    if int(os.environ.get("HANG_AFTER", "0") or 0) and n > int(os.environ["HANG_AFTER"]):
        (home / "hanging").write_text("yes")
        time.sleep(600)
    time.sleep(0.3)
    return [float(np.asarray(im.convert("L"), dtype=np.float64).mean()) / 255 for im in images]
"""


def start_worker(tmp_path: Path, name: str, storage: str, study: str, trials: int, models, **env) -> subprocess.Popen:
    home = tmp_path / f"home-{name}"
    (home / "scorers").mkdir(parents=True)
    (home / "scorers" / "bright.py").write_text(HANGING)
    environment = {**os.environ, "ALLOY_HOME": str(home), "ALLOY_INSTANCE": name, **env}
    command = [sys.executable, str(WORKER), str(tmp_path / f"webui-{name}"), storage, study, str(trials)]
    return subprocess.Popen([*command, *map(str, models)], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_workers_share_a_study_and_a_killed_workers_trial_runs_again(tmp_path, sd1, postgres):
    import optuna

    study_name, total = "shared", 6
    first = start_worker(tmp_path, "w1", postgres.url, study_name, total, sd1, HANG_AFTER="2")
    second = start_worker(tmp_path, "w2", postgres.url, study_name, total, sd1)
    hanging = tmp_path / "home-w1" / "hanging"
    deadline = time.monotonic() + 180
    while not hanging.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "worker w1 never reached its scorer's hang"
        time.sleep(0.2)
    first.kill()  # SIGKILL mid-trial: no cleanup runs, its trial stays RUNNING with an old heartbeat
    first.wait()
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer == {"state": "done", "error": "", "instance": "w2"}

    study = optuna.load_study(study_name=study_name, storage=postgres.url)
    trials = study.get_trials()
    failed = [t for t in trials if t.state.name == "FAIL"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    # The killed worker's trial: failed by its missing heartbeat (no error of its own), and run again by w2
    # with the same inputs; the study holds its total of finished trials, no more.
    assert len(failed) == 1 and failed[0].user_attrs["instance"] == "w1" and "error" not in failed[0].user_attrs
    assert len(complete) == total and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    again = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(again) == 1 and again[0].params == failed[0].params and again[0].user_attrs["instance"] == "w2"
    # Each trial ran once, in one worker: distinct inputs, its images in that worker's folder only.
    assert len({t.params["alpha"] for t in complete}) == total
    assert {t.user_attrs["instance"] for t in complete} == {"w1", "w2"}
    for t in complete:
        homes = [tmp_path / f"home-{w}" / "optimize" / study_name / f"trial-{t.number:04d}" for w in ("w1", "w2")]
        assert [h.is_dir() for h in homes] == [t.user_attrs["instance"] == "w1", t.user_attrs["instance"] == "w2"]
        images = sorted(homes[t.user_attrs["instance"] == "w2"].glob("*.png"))
        from PIL import Image

        brightness = [np.asarray(Image.open(p).convert("L"), dtype=np.float64).mean() / 255 for p in images]
        assert len(images) == 1 and t.values[0] == float(np.mean(brightness))


def test_a_claim_beyond_the_total_runs_nothing():
    """Two instances counting at once may both claim the last trial; the later claim (a higher number, as
    the storage hands them out in order) is the surplus: PRUNED, not counted, nothing merged."""
    from types import SimpleNamespace

    import optuna

    from lib_merge.app.optimize.runner import StudyControl, TrialRunner, counts

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))  # finished
    other = study.ask()  # another instance's claim, running
    mine = study.ask()
    plan = SimpleNamespace(request=SimpleNamespace(trials=2), human=False)
    runner = TrialRunner(plan, workbench=None, scorers={}, control=StudyControl(), prompts=[""], instance="late")
    assert runner.surplus(mine) and not runner.surplus(other)
    with pytest.raises(optuna.TrialPruned):
        runner.objective(mine)  # before any merge: the workbench (None here) is never touched
    study.tell(mine, state=optuna.trial.TrialState.PRUNED)
    study.tell(other, 2.0)
    assert counts(study) == (2, 0)
