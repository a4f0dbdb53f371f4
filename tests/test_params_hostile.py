"""Hostile values of a method's parameters over HTTP and in XYZ plans: each a one-line 400 naming the
parameter, never a 500, and no merge starts."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lib_merge.surfaces.http import add_routes

HOSTILE = [
    {"alpha": [1, 2]}, {"alpha": {"x": 1}}, {"alpha": True}, {"seed": 1e300}, {"seed": -1}, {"seed": "1.5"},
    {"density": "nan"}, {"density": "inf"}, {"density": "IN00=7"}, {"sign": 5}, {"sign": ["sum"]},
    {"elect": "maybe"}, {"elect": 2}, {"weights": [1]}, {"weights": ["a", "b"]}, {"max_iter": 0},
    {"nope": 1}, {"": 1}, {"__class__": 1},
]  # fmt: skip


@pytest.fixture
def api(webui):
    app = FastAPI()
    add_routes(app, webui.workbench)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("params", HOSTILE)
def test_hostile_params_answer_one_line_400(api, webui, params):
    method = "della" if "elect" in params else "geometric_median" if "max_iter" in params else "ties"
    method = "n_average" if "weights" in params else method
    body = {"method": method, "a": webui.title("model_a"), "models": [webui.title("model_b"), webui.title("model_c")],
            "params": params}  # fmt: skip
    answer = api.post("/alloy/v1/merge", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "\n" not in error and "Traceback" not in error and "unexpected" not in error, error
    assert f"{next(iter(params))}" in error, error  # the parameter is named
    assert webui.workbench.live is None
    plan = {"x": {"type": "seed", "values": "1"}, "merge": body}
    planned = api.post("/alloy/v1/xyz", json=plan)
    assert planned.status_code == 400, planned.text
    assert f"{next(iter(params))}" in planned.json()["error"], planned.text
