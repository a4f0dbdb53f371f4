"""Optimize: studies over live merges in the WebUI double, scored by a plugin the test writes; the search
space read and checked before anything runs; resumable studies in Optuna's storage."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from helpers import load
from PIL import Image

from lib_merge.app.history import read_history, search_history
from lib_merge.app.optimize import runner as study_runner
from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.optimize.request import StudyGen, StudyRequest
from lib_merge.app.optimize.space import Blocks, block_vector, parse_space
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.engine.live import model_tensors
from lib_merge.errors import AlloyError

BRIGHT = """import numpy as np

def score(images, prompts):
    return [float(np.asarray(im.convert("L"), dtype=np.float64).mean()) / 255 for im in images]
"""


def brightness(path) -> float:
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float64).mean()) / 255


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "scorers").mkdir(parents=True)
    (home / "scorers" / "bright.py").write_text(BRIGHT)
    monkeypatch.setenv("ALLOY_HOME", str(home))
    return home


def study_request(webui, name: str, trials: int, **changes) -> StudyRequest:
    a, b = webui.title("model_a"), webui.title("model_b")
    recipe = f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = weighted_sum(A, B, alpha=param("alpha"))\n'
    fields = dict(study=name, recipe=recipe, space={"alpha": {"low": 0.0, "high": 1.0}}, trials=trials,
                  sampler="random", seed=3, scorer="plugin:bright",
                  gen=StudyGen(prompt=["a cat"], seeds=[1, 2], holdout_seeds=[5, 6], steps=2, width=64,
                               height=64))  # fmt: skip
    fields.update(changes)
    return StudyRequest(**fields)


def test_a_study_merges_generates_scores_and_logs_each_trial(webui, home):
    desk = OptimizeDesk(webui.workbench)
    run = desk.start(study_request(webui, "bright-1", trials=4))
    assert run.state == "done", run.error
    status = desk.status("bright-1")
    trials = status["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3] and {t["state"] for t in trials} == {"COMPLETE"}
    rows = read_history(webui.workbench.history_path()).rows
    found = search_history(rows, "bright-1")
    assert len(found) == 4
    for trial in trials:
        # The score is the plugin's mean over the trial's kept images (seeds 1 and 2 × one prompt).
        images = sorted((home / "optimize" / "bright-1" / f"trial-{trial['number']:04d}").glob("*.png"))
        assert len(images) == 2
        assert trial["values"][0] == pytest.approx(np.mean([brightness(p) for p in images]), abs=1e-9)
        assert set(trial["times"]) == {"merge", "generate", "score"} and all(v >= 0 for v in trial["times"].values())
        row = next(r for r in found if r.id == trial["history_id"])
        assert row.settings["params"] == trial["params"] and row.recipe_hash == trial["recipe_hash"]
        assert row.settings["scores"] == {"plugin:bright": trial["values"][0]}
    best = max(trials, key=lambda t: t["values"][0])
    assert status["best"] == [best["number"]] and status["state"] == "done"
    report = status["report"]["objectives"]["plugin:bright"]
    assert {"best", "A", "B", "beats_A", "beats_B", "beats_both"} <= set(report)
    assert report["A"]["images"] == 2 and status["scorer_check"]["plugin:bright"]["noise"] >= 0
    # After the study the loaded model is model A again, bit for bit.
    a, b = load(webui.folder / "model_a.safetensors"), load(webui.folder / "model_b.safetensors")
    live = model_tensors(webui.model)
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in a.items())
    # Apply best: the best trial's merge, live, with its own history row.
    applied = desk.apply("bright-1")
    alpha = best["params"]["alpha"]
    key = "model.diffusion_model.out.2.weight"
    expected = a[key].double() * (1 - alpha) + b[key].double() * alpha
    assert (model_tensors(webui.model)[key].double() - expected).abs().max() < 2e-3
    assert applied.recipe.digest == best["recipe_hash"] and applied.history_id > max(t["history_id"] for t in trials)


def test_the_same_seed_gives_the_same_trials_and_a_study_resumes(webui, home):
    desk = OptimizeDesk(webui.workbench)
    first = desk.start(study_request(webui, "s1", trials=3, gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[])))
    again = desk.start(study_request(webui, "s2", trials=3, gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[])))
    assert first.state == again.state == "done"
    params = [[t["params"] for t in desk.status(name)["trials"]] for name in ("s1", "s2")]
    assert params[0] == params[1] and len({p["alpha"] for p in params[0]}) == 3
    resumed = desk.start(study_request(webui, "s1", trials=5, gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[])))
    assert resumed.state == "done"
    trials = desk.status("s1")["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4] and trials[:3] == desk.status("s1")["trials"][:3]


def test_a_trial_cut_off_by_a_kill_is_failed_and_the_study_goes_on(webui, home, monkeypatch):
    """A killed process leaves its trial RUNNING with an old heartbeat: the next start fails it and runs on."""
    monkeypatch.setattr(study_runner, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(study_runner, "GRACE_SECONDS", 2)
    desk = OptimizeDesk(webui.workbench)
    request = study_request(webui, "killed", trials=2, gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[]))
    study = study_runner.open_study(desk.plan(request))
    cut_off = study.ask()
    study._storage.record_heartbeat(cut_off._trial_id)  # what the killed process's heartbeat thread wrote last
    time.sleep(3)
    run = desk.start(request)
    assert run.state == "done", run.error
    states = [(t["number"], t["state"]) for t in desk.status("killed")["trials"]]
    assert states[0] == (0, "FAIL") and [s for _, s in states[1:]] == ["COMPLETE"] * (len(states) - 1)


def test_the_space_is_read_before_anything_runs():
    space = parse_space({"a": {"low": 0, "high": 1, "step": 0.25}, "s": {"choices": ["sum", "mean"]},
                         "w": {"blocks": True, "knots": 3},
                         "g": {"blocks": True, "groups": [["IN00", "IN01"], ["M00"]]}})  # fmt: skip
    assert space.grid(SCHEMAS["sd1"])["a"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad, words in [
        ({"a": {"low": 1, "high": 0}}, "low (1) must be below high (0)"),
        ({"a": {"low": 0, "high": float("nan")}}, "high must be a finite number"),
        ({"a": {"low": 0, "high": 1, "step": 2}}, "step must be above 0"),
        ({"a": {"choices": []}}, "choices must be a list"),
        ({"a": {"blocks": True}}, 'either "groups" or "knots"'),
        ({"a": {"blocks": True, "knots": 0}}, "knots must be a whole number"),
        ({"a": {"blocks": True, "groups": [["IN00"], ["IN00"]]}}, "a block stands in two groups"),
        ({"a": {"low": 0, "high": 1, "zz": 1}}, "unknown field zz"),
        ([1, 2], '"space" must be an object'),
    ]:
        with pytest.raises(AlloyError, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_space(bad)


def test_block_vectors_from_knots_and_groups():
    sd1 = SCHEMAS["sd1"]
    n = len(sd1.slots)
    curve = block_vector(Blocks(knots=3), [0.0, 1.0, 0.0], sd1)
    reference = [1 - abs(2 * i / (n - 1) - 1) for i in range(n)]  # up to 1 at the middle slot, down again
    assert curve == pytest.approx(reference, abs=1e-12)
    grouped = block_vector(Blocks(groups=(("IN00", "IN01"), ("M00",))), [0.2, 0.7, 0.5], sd1)
    expected = [0.2 if s in ("IN00", "IN01") else 0.7 if s == "M00" else 0.5 for s in sd1.slots]
    assert grouped == expected
