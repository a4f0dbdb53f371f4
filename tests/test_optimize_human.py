"""Optimize with a person: pairs of trials' images, the person's choices fitted into utilities (choix), the
next trial proposed from them; a simulated person who prefers the image nearest a hidden target finds it as
well as a scorer-driven study does. The study waits for the person, stops and resumes with its pairs."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
from helpers import load
from PIL import Image

from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.optimize.request import StudyGen, StudyRequest
from lib_merge.app.ports import GenResult
from lib_merge.engine.live import model_tensors
from lib_merge.errors import AlloyError

KEYS = (
    "model.diffusion_model.input_blocks.1.1.proj_in.weight",
    "model.diffusion_model.output_blocks.5.0.in_layers.2.weight",
)
TARGET = (0.73, 0.25)  # the weights of IN01 and OUT05 whose image the person has in mind
SPACE = {"w": {"blocks": True, "groups": [["IN01"], ["OUT05"]], "low": 0.0, "high": 1.0}}

NEAR = """import os
import numpy as np

def score(images, prompts):
    target = [float(v) for v in os.environ["ALLOY_TEST_TARGET"].split(",")]
    out = []
    for image in images:
        pixels = np.asarray(image.convert("L"), dtype=np.float64) / 255
        half = pixels.shape[0] // 2
        out.append(-(abs(pixels[:half].mean() - target[0]) + abs(pixels[half:].mean() - target[1])))
    return out
"""


def distance(image: Image.Image) -> float:
    pixels = np.asarray(image.convert("L"), dtype=np.float64) / 255
    half = pixels.shape[0] // 2
    return abs(pixels[:half].mean() - TARGET[0]) + abs(pixels[half:].mean() - TARGET[1])


@pytest.fixture
def weights_picture(webui, monkeypatch, tmp_path):
    """Generation that draws the loaded model's IN01 and OUT05 weights: the top half's grey is where IN01's
    tensor lies between A and B, the bottom half OUT05's (a smooth picture of the merge, like a real one)."""
    a, b = load(webui.folder / "model_a.safetensors"), load(webui.folder / "model_b.safetensors")
    home = tmp_path / "home"
    (home / "scorers").mkdir(parents=True)
    (home / "scorers" / "near.py").write_text(NEAR)
    monkeypatch.setenv("ALLOY_HOME", str(home))
    monkeypatch.setenv("ALLOY_TEST_TARGET", ",".join(map(str, TARGET)))
    workbench = webui.workbench
    generate = workbench.generate

    def picture(settings):
        generate(settings)  # the host's own generation runs (and is checked) as in a study
        live = model_tensors(webui.model)
        greys = []
        for key in KEYS:
            lo, hi, now = (t[key].double().flatten() for t in (a, b, live))
            apart = (hi - lo).abs() > 1e-2
            ratio = float(torch.median((now - lo)[apart] / (hi - lo)[apart]))
            greys.append(int(round(255 * min(max(ratio, 0.0), 1.0))))
        pixels = np.zeros((16, 16, 3), dtype=np.uint8)
        pixels[:8], pixels[8:] = greys
        return GenResult([Image.fromarray(pixels) for _ in range(settings.batch_size or 1)], "")

    monkeypatch.setattr(workbench, "generate", picture)
    return home


def request(webui, name: str, scorer: str, trials: int, **changes) -> StudyRequest:
    a, b = webui.title("model_a"), webui.title("model_b")
    recipe = f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = weighted_sum(A, B, alpha=param("w"))\n'
    fields = dict(study=name, recipe=recipe, space=SPACE, trials=trials, sampler="tpe", seed=5, scorer=scorer,
                  gen=StudyGen(prompt=["x"], seeds=[1], holdout_seeds=[]))  # fmt: skip
    return StudyRequest(**{**fields, **changes})


def person_choice(pair: dict) -> str:
    """The simulated person: the side whose images are nearer the picture in mind."""
    near = [np.mean([distance(Image.open(io.BytesIO(base64.b64decode(s)))) for s in pair[side]["images"]])
            for side in ("left", "right")]  # fmt: skip
    if abs(near[0] - near[1]) < 1 / 255:
        return "tie"
    return "left" if near[0] < near[1] else "right"


def error_of(params: dict) -> float:
    return abs(params["w[IN01]"] - TARGET[0]) + abs(params["w[OUT05]"] - TARGET[1])


def run_with_person(desk: OptimizeDesk, study: str, answers: list | None = None, limit: int = 10_000) -> None:
    """Answer every pair until the study ends (or `limit` answers)."""
    deadline = time.monotonic() + 240
    while desk.running() is not None and time.monotonic() < deadline:
        pair = desk.pair(study)
        if pair.get("pair_id") is None:
            time.sleep(0.05)
            continue
        if answers is not None:
            if len(answers) >= limit:
                return
            answers.append(pair)
        desk.choose(study, pair["pair_id"], person_choice(pair))
    assert time.monotonic() < deadline, "the study did not end"


def test_a_simulated_person_finds_the_target_as_well_as_a_scorer(webui, weights_picture):
    desk = OptimizeDesk(webui.workbench)
    trials = 24
    scored = desk.start(request(webui, "by-scorer", "plugin:near", trials))
    assert scored.state == "done", scored.error
    scorer_best = next(
        t for t in desk.status("by-scorer")["trials"] if t["number"] == desk.status("by-scorer")["best"][0]
    )

    answers: list = []
    run = desk.start(request(webui, "by-person", "human", trials), wait=False)
    run_with_person(desk, "by-person", answers)
    run.thread.join(30)
    assert run.state == "done", run.error
    status = desk.status("by-person")
    assert len([t for t in status["trials"] if t["state"] == "COMPLETE"]) == trials
    assert status["pairs"]["answered"] == len(answers) >= trials - 2
    person_best = next(t for t in status["trials"] if t["number"] == status["best"][0])
    # Both find the picture in mind; the person (choices only) about as closely as the scorer (distances).
    assert error_of(scorer_best["params"]) < 0.1
    assert error_of(person_best["params"]) < min(0.1, error_of(scorer_best["params"]) + 0.06)
    # Every pair showed two trials' images of the same seeds and prompts, the newer trial on the left.
    assert all(len(p["left"]["images"]) == len(p["right"]["images"]) == 1 for p in answers)
    assert all(p["left"]["trial"] > p["right"]["trial"] for p in answers)
    # The utilities order the trials as the person would: the best's picture is nearer than most.
    errors = sorted(error_of(t["params"]) for t in status["trials"] if t["state"] == "COMPLETE")
    assert error_of(person_best["params"]) <= errors[len(errors) // 4]


def test_the_study_waits_for_the_person_and_resumes_with_its_pairs(webui, weights_picture):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_merge.surfaces.http import add_routes

    app = FastAPI()
    add_routes(app, webui.workbench)
    api = TestClient(app)
    body = {"study": "eye", "recipe": request(webui, "eye", "human", 1).recipe, "space": SPACE, "trials": 8,
            "sampler": "tpe", "seed": 1, "scorer": "human", "gen": {"prompt": "x", "seeds": [1, 2]},
            "wait": False}  # fmt: skip
    assert api.post("/alloy/v1/optimize", json=body).status_code == 200
    deadline = time.monotonic() + 60
    pair = api.get("/alloy/v1/optimize/eye/pair").json()
    assert pair["pair"] is None and "being made" in pair["reason"]  # trials 0 and 1 are still being made
    assert api.get("/alloy/v1/optimize/eye").json()["best"] == []  # nobody has chosen: no best yet
    while api.get("/alloy/v1/optimize/eye/pair").json().get("pair_id") is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Nobody answers: one pair ahead, the study makes one more trial and waits (it does not run on).
    time.sleep(3)
    status = api.get("/alloy/v1/optimize/eye").json()
    assert (
        status["state"] == "running" and len(status["trials"]) == 3 and status["pairs"] == {"answered": 0, "pending": 2}
    )
    first = api.get("/alloy/v1/optimize/eye/pair").json()
    assert (first["left"]["trial"], first["right"]["trial"]) == (1, 0) and len(first["left"]["images"]) == 2
    # Bad choices: one line each, a 400.
    for choice, words in [({"pair_id": "nosuch", "winner": "left"}, "no pair 'nosuch' in the study eye"),
                          ({"pair_id": first["pair_id"], "winner": "up"}, "winner must be one of left, right, tie"),
                          ({"pair_id": 5, "winner": "left"}, "pair_id must be the text"),
                          ({"pair_id": first["pair_id"], "winner": "left", "x": 1}, "unknown field 'x'")]:  # fmt: skip
        bad = api.post("/alloy/v1/optimize/eye/choice", json=choice)
        assert bad.status_code == 400 and words in bad.json()["error"], bad.text
    from test_api_hostile import _NOT_OBJECTS, _WRONG, _plain

    for field in ("pair_id", "winner"):
        for value in _WRONG:
            wrong = {"pair_id": first["pair_id"], "winner": "left", field: value}
            _plain(api.post("/alloy/v1/optimize/eye/choice", json=wrong))
    for raw in _NOT_OBJECTS:
        _plain(api.post("/alloy/v1/optimize/eye/choice", content=raw.encode("utf-8", "surrogateescape"),
                        headers={"content-type": "application/json"}))  # fmt: skip
    chosen = api.post(
        "/alloy/v1/optimize/eye/choice", json={"pair_id": first["pair_id"], "winner": person_choice(first)}
    )
    assert chosen.status_code == 200 and chosen.json()["winner"] in ("left", "right", "tie")
    again = api.post("/alloy/v1/optimize/eye/choice", json={"pair_id": first["pair_id"], "winner": "left"})
    assert again.status_code == 400 and "answered already" in again.json()["error"]
    while len(api.get("/alloy/v1/optimize/eye").json()["trials"]) < 4:  # one answer: one more trial
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Stop while waiting for the person: it stops at once, with no trial more; the open pairs stay in the
    # study and come back on resume.
    while not ((s := api.get("/alloy/v1/optimize/eye").json())["pairs"]["pending"] == 2
               and [t["state"] for t in s["trials"]] == ["COMPLETE"] * 4):  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.5)  # the study waits for the person now
    pending = api.get("/alloy/v1/optimize/eye/pair").json()["pair_id"]
    assert api.post("/alloy/v1/optimize/eye/stop").json()["stopping"] is True
    while api.get("/alloy/v1/optimize/eye").json()["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped = api.get("/alloy/v1/optimize/eye/pair").json()
    assert stopped["pair_id"] == pending  # readable while stopped; answering waits for the resume
    assert len(api.get("/alloy/v1/optimize/eye").json()["trials"]) == 4  # Stop ended the wait: no trial more
    assert api.post("/alloy/v1/optimize", json=body).status_code == 200
    assert api.get("/alloy/v1/optimize/eye/pair").json()["pair_id"] == pending
    while api.get("/alloy/v1/optimize/eye").json()["state"] == "running":
        pair = api.get("/alloy/v1/optimize/eye/pair").json()
        if pair.get("pair_id"):
            api.post("/alloy/v1/optimize/eye/choice", json={"pair_id": pair["pair_id"], "winner": person_choice(pair)})
        assert time.monotonic() < deadline + 60
        time.sleep(0.05)
    done = api.get("/alloy/v1/optimize/eye").json()
    assert done["state"] == "done" and [t["number"] for t in done["trials"]] == list(range(8))
    assert done["best"] and done["trials"][done["best"][0]]["values"][0] == max(
        t["values"][0] for t in done["trials"])  # fmt: skip
    # A study scored by a scorer has no pairs; "human" is alone and needs one WebUI's storage.
    assert api.get("/alloy/v1/optimize/neverran/pair").status_code == 400
    for change, words in [({"scorer": ["human", "plugin:near"]}, '"human" is the only objective'),
                          ({"sampler": "grid"}, "use tpe, cmaes or random"),
                          ({"storage": "postgresql://x@127.0.0.1:1/y"}, "runs in one WebUI")]:  # fmt: skip
        bad = api.post("/alloy/v1/optimize", json={**body, "study": "bad", **change})
        assert bad.status_code == 400 and words in bad.json()["error"], bad.text


def test_a_scorer_study_has_no_pairs(webui, weights_picture):
    desk = OptimizeDesk(webui.workbench)
    desk.start(request(webui, "plain", "plugin:near", 2))
    with pytest.raises(AlloyError, match='scored by plugin:near, not by "human"'):
        desk.pair("plain")
