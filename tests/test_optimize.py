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
    assert {t["instance"] for t in trials} == {run.instance} and run.instance  # who ran each trial
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
    resumed_alphas = {t["params"]["alpha"] for t in trials[3:]}
    assert not resumed_alphas & {p["alpha"] for p in params[0]}  # a resumed study draws anew, it does not replay
    # Resuming with another space or more objectives would mix trials that measured different things.
    gen = StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[])
    with pytest.raises(AlloyError, match="searched alpha; this space has alpha@k0"):
        other = study_request(webui, "s1", trials=6, gen=gen, space={"alpha": {"blocks": True, "knots": 1}})
        desk.start(other)
    (home / "scorers" / "bright2.py").write_text(BRIGHT)
    with pytest.raises(AlloyError, match="has 1 objective"):
        desk.start(study_request(webui, "s1", trials=6, gen=gen, scorer=["plugin:bright", "plugin:bright2"]))


def test_a_trial_cut_off_by_a_kill_is_failed_and_the_study_goes_on(webui, home, monkeypatch):
    """A killed process leaves its trial RUNNING with an old heartbeat: the next start fails it, runs a copy of
    it (the same inputs), and the failed trial does not count towards the study's total."""
    monkeypatch.setattr(study_runner, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(study_runner, "GRACE_SECONDS", 2)
    desk = OptimizeDesk(webui.workbench)
    request = study_request(webui, "killed", trials=2, gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[]))
    study = study_runner.open_study(desk.plan(request))
    cut_off = study.ask()
    cut_off.suggest_float("alpha", 0.0, 1.0)  # drawn, then the process died in its merge
    study._storage.record_heartbeat(cut_off._trial_id)  # what the killed process's heartbeat thread wrote last
    time.sleep(3)
    run = desk.start(request)
    assert run.state == "done", run.error
    trials = desk.status("killed")["trials"]
    assert [(t["number"], t["state"]) for t in trials] == [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert trials[1]["params"] == trials[0]["params"] != trials[2]["params"]
    # Read by a process that did not run it (a restarted WebUI): done, as it holds the total asked for.
    assert OptimizeDesk(webui.workbench).status("killed")["state"] == "done"


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


SLOW = """import time

def score(images, prompts):
    time.sleep(0.4)
    return [float(i) for i, _ in enumerate(images)]
"""


def test_http_starts_reads_stops_resumes_and_applies_a_study(webui, home):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_merge.surfaces.http import add_routes

    (home / "scorers" / "slow.py").write_text(SLOW)
    app = FastAPI()
    add_routes(app, webui.workbench)
    api = TestClient(app)
    a, b = webui.title("model_a"), webui.title("model_b")
    recipe = f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = weighted_sum(A, B, alpha=param("alpha"))\n'
    body = {"study": "web", "recipe": recipe, "space": {"alpha": {"low": 0, "high": 1}}, "trials": 3,
            "sampler": "tpe", "seed": 1, "scorer": "plugin:bright",
            "gen": {"prompt": "a cat", "seeds": [1], "holdout_seeds": [9], "steps": 2, "width": 64,
                    "height": 64}}  # fmt: skip
    done = api.post("/alloy/v1/optimize", json=body)
    assert done.status_code == 200, done.text
    answer = done.json()
    assert answer["state"] == "done" and [t["state"] for t in answer["trials"]] == ["COMPLETE"] * 3
    assert set(answer["trials"][0]) >= {"number", "params", "values", "state", "history_id", "recipe_hash", "times"}
    assert answer["report"]["objectives"]["plugin:bright"]["best"]["images"] == 1
    assert api.get("/alloy/v1/optimize/web").json()["trials"] == answer["trials"]
    applied = api.post("/alloy/v1/optimize/web/apply")
    assert applied.status_code == 200 and applied.json()["hash"] in {t["recipe_hash"] for t in answer["trials"]}

    # Bad requests: one line each, before anything runs.
    for change, words in [
        ({"space": {"beta": {"low": 0, "high": 1}}}, "space input beta is not an open param() of the recipe"),
        ({"scorer": "nosuch"}, "unknown scorer 'nosuch'"),
        ({"scorer": "plugin:../evil"}, "use letters, digits, - and _ only (no path)"),
        ({"trials": 0}, "trials must be a whole number from 1"),
        ({"trials": "5"}, "'trials' must be a whole number, not a string"),
        ({"study": "../x"}, "study name '../x'"),
        ({"gen": {"seeds": [1], "holdout_seeds": [1]}}, "holdout seeds must be seeds the search never sees"),
        ({"sampler": "sgd"}, "unknown sampler 'sgd'"),
        ({"storage": "sqlite:////tmp/elsewhere.db"}, "a SQLite storage must be a file in"),
        ({"storage": "sqlite:///../../escape.db"}, "a SQLite storage must be a file in"),
        ({"storage": "redis://localhost/0"}, "use a SQLite file, PostgreSQL or MySQL"),
        ({"storage": "postgresql://nobody@127.0.0.1:1/none"}, "storage postgresql://nobody@127.0.0.1:1/none:"),
        ({"gen": {"seeds": [1], "width": 65}}, '"width" must be a multiple of 8 from 64 to 2048, not 65'),
        ({"gen": {"seeds": [1], "height": 32}}, '"height" must be a multiple of 8 from 64 to 2048, not 32'),
        ({"gen": {"seeds": [1], "cfg_scale": 0}}, '"cfg_scale" must be a number from 1 to 30, not 0'),
        # The WebUI would run an unknown sampler as its default with only a log line: refused instead.
        ({"gen": {"seeds": [1], "sampler_name": "Euler aa"}}, "unknown sampler_name 'Euler aa'; the WebUI has"),
    ]:
        bad = api.post("/alloy/v1/optimize", json={**body, "study": "bad", **change})
        assert bad.status_code == 400 and words in bad.json()["error"], (change, bad.text)
        assert "\n" not in bad.json()["error"]
    assert api.get("/alloy/v1/optimize/neverran").status_code == 400
    assert api.post("/alloy/v1/optimize/neverran/stop").status_code == 400

    # A slow study in the background: a second start is busy (409), Stop ends it after the current trial.
    slow = dict(body, study="slow", trials=20, scorer="plugin:slow", wait=False)
    started = api.post("/alloy/v1/optimize", json=slow)
    assert started.status_code == 200 and started.json()["state"] == "running", started.text
    assert started.json()["progress"]["planned"] == 20
    busy = api.post("/alloy/v1/optimize", json=dict(body, study="other"))
    assert busy.status_code == 409 and "running" in busy.json()["error"]
    deadline = time.monotonic() + 60
    while not api.get("/alloy/v1/optimize/slow").json()["trials"] and time.monotonic() < deadline:
        time.sleep(0.2)
    # The loaded model is the study's: another client's merge, Restore or generation is busy, not interleaved.
    merge = {"recipe": f'alloy-recipe 1\nmerged = weighted_sum(model("{a}"), model("{b}"), alpha=0.3)\n'}
    for path, request in (("/alloy/v1/merge", merge), ("/alloy/v1/restore", {})):
        refused = api.post(path, json=request)
        assert refused.status_code == 409 and "the study slow holds the loaded model" in refused.json()["error"]
    with pytest.raises(AlloyError, match="the study slow holds the loaded model"):
        webui.workbench.generate(webui.host.base_settings())
    assert api.post("/alloy/v1/optimize/slow/stop").json()["stopping"] is True
    while api.get("/alloy/v1/optimize/slow").json()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped = api.get("/alloy/v1/optimize/slow").json()
    assert stopped["state"] == "stopped" and 1 <= len(stopped["trials"]) < 20
    assert all(t["state"] == "COMPLETE" for t in stopped["trials"])
    resumed = api.post("/alloy/v1/optimize", json=dict(slow, trials=len(stopped["trials"]) + 1, wait=True))
    numbers = [t["number"] for t in resumed.json()["trials"]]
    assert resumed.json()["state"] == "done" and numbers == list(range(len(stopped["trials"]) + 1))


def test_optimize_answers_one_line_to_wrongly_typed_fields(webui, home):
    """Every field of POST /optimize (and of its "gen") with hostile values: a 400 or 409 in one plain
    line, never a 500; the route's path parameters too."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from test_api_hostile import _NOT_OBJECTS, _WRONG, _plain

    from lib_merge.surfaces.http import add_routes

    app = FastAPI()
    add_routes(app, webui.workbench)
    api = TestClient(app)
    good = {"study": "h", "recipe": study_request(webui, "h", 1).recipe, "space": {"alpha": {"low": 0, "high": 1}},
            "trials": 1, "sampler": "random", "seed": 0, "scorer": "plugin:bright", "storage": "",
            "restore_after": True, "wait": True,
            "gen": {"prompt": ["x"], "seeds": [1], "holdout_seeds": [], "steps": 1, "width": 64, "height": 64,
                    "sampler_name": "Euler", "cfg_scale": 5, "negative_prompt": ""}}  # fmt: skip
    bodies = [{**good, field: value} for field in good for value in _WRONG]
    bodies += [{**good, "gen": {**good["gen"], field: value}} for field in good["gen"] for value in _WRONG]
    bodies += [{**good, "space": {"alpha": {"low": 0, "high": 1, "log": value}}} for value in _WRONG]
    bodies += [{**good, "space": {"alpha": {"blocks": True, "groups": value}}} for value in _WRONG]
    for number, body in enumerate(bodies):
        body = {**body, "study": body["study"] if body["study"] != "h" else f"h{number}"}
        answer = api.post("/alloy/v1/optimize", json=body)
        if answer.status_code != 200:
            try:
                _plain(answer)
            except AssertionError as e:
                raise AssertionError(f"POST /optimize {body!r}: {e}") from None
    for raw in _NOT_OBJECTS:
        answer = api.post("/alloy/v1/optimize", content=raw.encode("utf-8", "surrogateescape"),
                          headers={"content-type": "application/json"})  # fmt: skip
        _plain(answer)
    for name in ("a b", ".hidden", "x" * 300, "%00", "a%2Fb"):
        for method, path in (("get", ""), ("post", "/stop"), ("post", "/apply")):
            answer = getattr(api, method)(f"/alloy/v1/optimize/{name}{path}")
            assert answer.status_code in (400, 404), (name, path, answer.status_code)
            if answer.status_code == 400:
                _plain(answer)


DARK = BRIGHT.replace("def score", "def _bright").replace("return [", "return [") + (
    "\n\ndef score(images, prompts):\n    return [1 - s for s in _bright(images, prompts)]\n"
)


def test_two_objectives_give_a_pareto_front_and_blocks_are_searched(webui, home):
    """Brightness up and darkness down is one direction twice; brightness up and darkness up are opposed:
    the front holds the trials no other trial beats in both. A block vector by groups fills the recipe."""
    (home / "scorers" / "dark.py").write_text(DARK)
    desk = OptimizeDesk(webui.workbench)
    a, b = webui.title("model_a"), webui.title("model_b")
    recipe = (f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\n'
              'merged = weighted_sum(A, B, alpha=param("w"))\n')  # fmt: skip
    space = {"w": {"blocks": True, "groups": [["IN00", "IN01", "IN02"], ["M00"]], "low": 0.1, "high": 0.9}}
    scorers = ["plugin:bright", "plugin:dark"]
    request = study_request(webui, "front", trials=5, recipe=recipe, space=space, scorer=scorers,
                            gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[3]))  # fmt: skip
    run = desk.start(request)
    assert run.state == "done", run.error
    status = desk.status("front")
    trials = status["trials"]
    assert status["directions"] == ["maximize", "maximize"]
    assert all(t["values"][0] + t["values"][1] == pytest.approx(1.0) for t in trials)
    assert set(status["best"]) == {t["number"] for t in trials}  # opposed objectives: every trial is on the front
    assert set(trials[0]["params"]) == {"w[IN00+IN01+IN02]", "w[M00]", "w[rest]"}
    rows = {r.id: r for r in read_history(webui.workbench.history_path()).rows}
    row = rows[trials[0]["history_id"]]
    assert "weighted_sum(" in row.recipe and "alpha=" in row.recipe
    assert set(status["report"]["objectives"]) == {"plugin:bright", "plugin:dark"}


def test_a_trial_whose_model_changed_is_not_scored_and_failures_stop_the_study(webui, home, monkeypatch):
    """A Restore (or another merge) between a trial's merge and its images fails the trial instead of scoring
    model A's images as the trial's; three failed trials in a row stop the study with a warning."""
    desk = OptimizeDesk(webui.workbench)
    generate = webui.workbench.generate
    calls = {"n": 0}

    def restored_first(settings):
        calls["n"] += 1
        if calls["n"] == 1:
            webui.workbench.restore()  # the model changed under the trial (a host's own checkpoint load)
        return generate(settings)

    monkeypatch.setattr(webui.workbench, "generate", restored_first)
    gen = StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[])
    run = desk.start(study_request(webui, "raced", trials=3, gen=gen))
    trials = desk.status("raced")["trials"]
    assert run.state == "done" and [t["state"] for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert any("the loaded model changed during the trial" in w for w in desk.status("raced")["warnings"])

    def broken(settings):
        raise RuntimeError("Kernel size can't be greater than actual input size")

    monkeypatch.setattr(webui.workbench, "generate", broken)
    run = desk.start(study_request(webui, "broken", trials=10, gen=gen))
    status = desk.status("broken")
    assert run.state == "stopped" and [t["state"] for t in status["trials"]] == ["FAIL"] * 3
    assert "generation failed: RuntimeError" in status["warnings"][0] and "3 trials failed in a row" in " ".join(
        status["warnings"])  # fmt: skip


def test_a_trial_of_black_images_warns(webui, home, monkeypatch):
    """A merge that decodes to NaN gives black images in a WebUI without its NaN check: the trial is scored,
    and the study says why its images are black."""
    generate, calls = webui.workbench.generate, {"n": 0}

    def black_on_second(settings):
        result = generate(settings)
        calls["n"] += 1
        if calls["n"] == 2:
            result.images = [Image.new("RGB", image.size) for image in result.images]
        return result

    monkeypatch.setattr(webui.workbench, "generate", black_on_second)
    desk = OptimizeDesk(webui.workbench)
    gen = StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[])
    run = desk.start(study_request(webui, "black", trials=3, gen=gen))
    status = desk.status("black")
    assert run.state == "done" and [t["state"] for t in status["trials"]] == ["COMPLETE"] * 3
    assert [w for w in status["warnings"] if "black" in w] == [
        "trial 1: every image is black (the merge may give NaN, or the VAE overflowed)"
    ]
    assert status["trials"][1]["values"] == [0.0]


def test_the_view_and_the_verdict_hold_on_edge_cases():
    """The front may name a trial the trials snapshot still shows running; one held-out image gives no verdict."""
    from lib_merge.app.optimize.report import beats
    from lib_merge.app.optimize.view import progress_text

    status = {"study": "s", "state": "running", "best": [1], "progress": {"done": 1, "planned": 3, "eta_seconds": 5},
              "trials": [{"number": 0, "state": "COMPLETE", "values": [0.5], "params": {}},
                         {"number": 1, "state": "RUNNING", "values": None, "params": {}}]}  # fmt: skip
    assert "trial 1/3 of this run" in progress_text(status)
    # The time left counts down during a trial, and a study that is not running has none.
    control = study_runner.StudyControl(done=2, planned=5)
    now = time.monotonic()
    control.started, control.last_done = now - 30, now - 5
    assert control.progress()["eta_seconds"] == pytest.approx(12.5 * 3 - 5, abs=0.2)
    assert control.progress(running=False)["eta_seconds"] is None
    # The held-out line gives A and B, and no verdict from one image per model.
    one = {"mean": 0.5, "low": 0.5, "high": 0.5, "images": 1}
    at = {m: {"mean": m, "low": m, "high": m, "images": 1} for m in (0.4, 0.6)}
    report = {"objectives": {"s": {"best": one, "A": at[0.4], "B": at[0.6],
                                   "beats_both": False}}}  # fmt: skip
    line = progress_text({**status, "state": "done", "report": report}).split("\n\n")[-1]
    assert line == ("Held-out seeds, s: best 0.5 [0.5, 0.5], A 0.4 [0.4, 0.4], B 0.6 [0.6, 0.6]: one image per model "
                    "gives no verdict (add held-out seeds).")  # fmt: skip
    assert beats([0.9], [0.1], "maximize")[0] is False
    assert beats([0.9, 0.8, 0.85], [0.1, 0.2, 0.15], "maximize")[0] is True


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_importance_names_the_input_that_decides_the_best_scores(direction):
    """A high `x` gives the best scores, a high `y` the worst: `x` leads the importances whichever way the
    objective points (Optuna's evaluator ranks what gives low values unless told otherwise)."""
    import optuna

    from lib_merge.app.optimize.view import importance_rows

    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=0))
    sign = 1 if direction == "maximize" else -1

    def score(trial) -> float:
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        return sign * (10 * max(0.0, x - 0.8) - 3 * max(0.0, y - 0.8))

    study.optimize(score, n_trials=100)
    rows = importance_rows(study)
    assert [name for name, _ in rows] == ["x", "y"] and rows[0][1] > 3 * rows[1][1], rows


def test_restore_drops_the_name_of_a_merge_that_changed_nothing(webui):
    """Model A "merged" alone patches no tensor but named the loaded model; Restore gives the plain name back."""
    from lib_merge.app.requests import MergeRequest

    recipe = f'alloy-recipe 1\nA = model("{webui.title("model_a")}")\n'
    outcome = webui.workbench.merge(MergeRequest(recipe=recipe))
    assert webui.model.sd_checkpoint_info.name != "model_a.safetensors", outcome.message
    assert webui.workbench.restore().startswith("Nothing to restore")
    assert webui.model.sd_checkpoint_info.name == "model_a.safetensors"
