"""The plot desk without Gradio, and its HTTP routes: reserve, the queue, start and stop."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.plots.plan import XYZPlan
from lib_merge.surfaces.http import add_routes, parse_credentials

GEN = {"steps": 2, "width": 64, "height": 64, "prompt": "a cat"}


def plan_body(webui, values: str = "0.2, 0.8") -> dict:
    return {
        "x": {"type": "alpha", "values": values},
        "merge": {"a": webui.title("model_a"), "b": webui.title("model_b")},
        "gen": dict(GEN),
    }


@pytest.fixture
def routes(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    desk = PlotDesk(webui.workbench)
    app = FastAPI()
    add_routes(app, webui.workbench, desk=desk)
    return TestClient(app), desk


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_desk_checks_runs_and_splits_without_a_ui(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    desk = PlotDesk(webui.workbench)
    plan = XYZPlan.from_dict(plan_body(webui, "0.2, 0.8 | 0.5"))
    check = desk.check(plan)
    assert check.counts == [(2, 2), (1, 1)] and check.text() == "Plan OK: 2 cells, 2 merges; 1 cells, 1 merges."
    run = desk.run(plan)
    assert run.output.merges == 2 and len(run.queued) == 1
    assert [(r.id, r.status) for r in desk.rows()] == [(run.queued[0], "waiting")]
    assert run.message().endswith("1 more plots queued.")
    assert desk.stop() == []  # nothing runs now


def test_reserve_list_start_and_finish_over_http(routes, webui):
    client, desk = routes
    answer = client.post("/alloy/v1/xyz/reserve", json=plan_body(webui))
    assert answer.status_code == 200, answer.text
    ident = answer.json()["id"]
    rows = client.get("/alloy/v1/xyz/queue").json()
    assert rows["running"] is False
    assert rows["rows"] == [
        {
            "id": ident,
            "status": "waiting",
            "summary": "X: alpha 0.2, 0.8",
            "created": rows["rows"][0]["created"],
            "message": "",
        }
    ]
    started = client.post("/alloy/v1/xyz/queue/start").json()
    assert started == {"started": True, "message": "started"}
    wait_for(lambda: client.get("/alloy/v1/xyz/queue").json()["rows"][0]["status"] == "done")
    row = client.get("/alloy/v1/xyz/queue").json()["rows"][0]
    assert row["message"].startswith("XYZ plot: 2/2 cells, 2 merges")


def test_stop_answers_what_it_stopped(routes, webui):
    client, desk = routes
    assert client.post("/alloy/v1/stop").json() == {"stopped": [], "message": "idle"}
    client.post("/alloy/v1/xyz/reserve", json=plan_body(webui, "0-1 (12)"))
    client.post("/alloy/v1/xyz/queue/start")
    wait_for(lambda: client.get("/alloy/v1/xyz/queue").json()["rows"][0]["status"] == "running")
    time.sleep(0.3)
    answer = client.post("/alloy/v1/stop").json()
    assert answer == {"stopped": ["queue", "plot"], "message": "stopping the queue and the plot"}
    wait_for(lambda: client.get("/alloy/v1/xyz/queue").json()["rows"][0]["status"] != "running")
    row = client.get("/alloy/v1/xyz/queue").json()["rows"][0]
    assert row["status"] == "stopped" and "/12 cells" in row["message"] and "; stopped." in row["message"]


def test_stop_ends_a_running_merge(routes, webui, monkeypatch):
    """A merge started from the Merge tab or /merge: stop answers "merge" and the model stays A."""
    client, desk = routes
    import threading

    from lib_merge.app.requests import MergeRequest
    from lib_merge.engine import run
    from lib_merge.errors import Cancelled
    from lib_merge.recipe.form import MergeSettings

    entered = threading.Event()
    original = run.run_plan

    def slow(plan, sink, options=None):
        entered.set()
        options.cancel._event.wait(10)  # held until stop arrives
        return original(plan, sink, options)

    monkeypatch.setattr("lib_merge.engine.live.run_plan", slow)
    failures = []

    def merge():
        try:
            webui.workbench.merge(MergeRequest(MergeSettings(webui.title("model_a"), webui.title("model_b"))))
        except Cancelled as e:
            failures.append(e)

    worker = threading.Thread(target=merge)
    worker.start()
    assert entered.wait(10)
    assert client.post("/alloy/v1/stop").json()["stopped"] == ["merge"]
    worker.join(10)
    assert failures and webui.workbench.live is None


def test_bad_plans_and_missing_credentials_are_refused(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    app = FastAPI()
    add_routes(app, webui.workbench, parse_credentials("u:p"))
    client = TestClient(app)
    for method, route in (
        ("get", "/alloy/v1/xyz/queue"),
        ("post", "/alloy/v1/xyz/reserve"),
        ("post", "/alloy/v1/xyz/queue/start"),
        ("post", "/alloy/v1/stop"),
    ):
        assert getattr(client, method)(route).status_code == 401, route
    bad = client.post("/alloy/v1/xyz/reserve", json=plan_body(webui, "0.1, zz"), auth=("u", "p"))
    assert bad.status_code == 400 and "'zz': not a number" in bad.json()["error"]
    nothing = client.post("/alloy/v1/xyz/reserve", json=[], auth=("u", "p"))
    assert nothing.status_code == 400 and nothing.json()["error"] == "the body must be a JSON object"
    assert client.get("/alloy/v1/xyz/queue", auth=("u", "p")).json()["rows"] == []
