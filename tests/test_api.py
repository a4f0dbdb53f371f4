"""The HTTP API (/alloy/v1) on a FastAPI app, over the WebUI double and over the standalone host."""

from __future__ import annotations

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import load, metadata

from lib_merge.engine.live import model_tensors
from lib_merge.surfaces.http import add_routes, parse_credentials


@pytest.fixture
def api(webui):
    app = FastAPI()
    add_routes(app, webui.workbench)
    return TestClient(app)


def test_merge_by_flags_then_save_then_restore(api, webui):
    a = webui.title("model_a")
    answer = api.post("/alloy/v1/merge", json={"a": a, "b": webui.title("model_b"), "mode": "ws", "alpha": 0.3})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) >= {"name", "hash", "history_id", "seconds"}
    assert len(body["hash"]) == 64 and body["history_id"] == 1 and body["seconds"] >= 0
    assert webui.model.sd_checkpoint_info.sha256 == body["hash"]
    saved = api.post("/alloy/v1/save", json={"name": "via_api", "dtype": "fp32"})
    assert saved.status_code == 200, saved.text
    path = saved.json()["path"]
    assert path.endswith("via_api.safetensors")
    live = model_tensors(webui.model)
    tensors = load(path)
    assert all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point())
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in tensors.items())
    assert api.post("/alloy/v1/restore").status_code == 200
    a_tensors = load(webui.folder / "model_a.safetensors")
    live = model_tensors(webui.model)
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in a_tensors.items())
    assert webui.model.sd_checkpoint_info.name == "model_a.safetensors"


def test_merge_by_recipe_and_history_search(api, webui):
    recipe = (
        'alloy-recipe 1\nA = model("model_a.safetensors")\nB = model("model_b.safetensors")\n'
        'C = model("model_c.safetensors")\nmerged = add_difference(A, B, C, alpha=0.7)\n'
    )
    first = api.post("/alloy/v1/merge", json={"recipe": recipe}).json()
    second = api.post("/alloy/v1/merge", json={"a": "model_a", "b": "model_b", "alpha": 0.5}).json()
    rows = api.get("/alloy/v1/history", params={"q": "add_difference"}).json()["rows"]
    assert [r["id"] for r in rows] == [first["history_id"]]
    rows = api.get("/alloy/v1/history", params={"q": f"hash:{second['hash'][:8]}"}).json()["rows"]
    assert [r["id"] for r in rows] == [second["history_id"]]
    assert len(api.get("/alloy/v1/history").json()["rows"]) == 2
    assert api.get("/alloy/v1/status").json()["history_id"] == second["history_id"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"a": "model_a", "b": "missing_model"}, "missing_model"),
        ({"a": "model_a", "b": "model_b", "mode": "add_difference"}, "model C"),
        ({"a": "model_a", "b": "model_b", "blocks": "1,2,3"}, "3 values"),
        ({"a": "model_a", "b": "../../etc/passwd"}, "outside"),
        ({"a": "model_a", "b": "model_b", "colour": 1}, "unknown fields: colour"),
        ({"recipe": "alloy-recipe 1\nmerged = nonsense("}, "line"),
        ({}, "give 'recipe'"),
        ({"a": "model_a", "b": "model_b", "mode": "add", "calc": "cosineA"}, "cosineA needs mode Weight sum"),
        ({"a": "model_a", "b": "model_b", "calc": "trainDifference"}, "needs mode Add difference and a model C"),
        ({"a": "model_a", "b": "model_b", "gamma": 0.5}, "gamma is not used"),
        ({"a": "model_a", "b": "model_b", "rebasin": "false"}, "'rebasin' must be"),
        ({"a": "model_a", "b": "model_b", "alpha": [1]}, "'alpha' must be"),
        ({"a": "model_a", "b": "model_b", "rebasin": True}, "do not split into 8 heads"),  # scale-32 miniatures
    ],
)
def test_errors_answer_400_with_a_message(api, body, words):
    answer = api.post("/alloy/v1/merge", json=body)
    assert answer.status_code == 400
    assert words in answer.json()["error"]


def test_save_without_a_merge_is_a_400(api):
    answer = api.post("/alloy/v1/save", json={"name": "x"})
    assert answer.status_code == 400 and "not an Alloy merge" in answer.json()["error"]


def test_busy_answers_409_when_asked_not_to_wait(api, webui):
    webui.workbench._lock.acquire()
    try:
        answer = api.post("/alloy/v1/merge", json={"a": "model_a", "b": "model_b", "wait": False})
    finally:
        webui.workbench._lock.release()
    assert answer.status_code == 409 and "running" in answer.json()["error"]


def test_routes_require_the_webui_api_credentials(webui):
    app = FastAPI()
    add_routes(app, webui.workbench, parse_credentials("u:p, other:secret"))
    client = TestClient(app)
    assert client.get("/alloy/v1/history").status_code == 401
    assert client.get("/alloy/v1/history", auth=("u", "wrong")).status_code == 401
    assert client.get("/alloy/v1/history", auth=("u", "p")).status_code == 200
    assert client.post("/alloy/v1/restore", auth=("other", "secret")).status_code == 200


def test_standalone_api_writes_files(tmp_path, sd1):
    import shutil

    from lib_merge.surfaces.standalone import create_app

    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    app, _ = create_app(str(tmp_path))
    client = TestClient(app)
    body = client.post("/alloy/v1/merge", json={"a": sd1[0].name, "b": sd1[1].name, "alpha": 0.25}).json()
    assert body["path"].startswith(str(tmp_path)) and body["hash"][:10] in body["path"]
    a, b, out = load(sd1[0]), load(sd1[1]), load(body["path"])
    key = "model.diffusion_model.out.2.weight"
    expected = (a[key].double() * 0.75 + b[key].double() * 0.25).half()
    assert (out[key].float() - expected.float()).abs().max() <= 1e-3
    assert client.get("/", follow_redirects=True).status_code == 200  # the tabs are served too


def test_xyz_answers_the_grid_and_each_cells_merge(api, webui, tmp_path):
    import base64
    import io

    from PIL import Image

    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    plan = {
        "x": {"type": "alpha", "values": "0.25, 0.75"},
        "y": {"type": "seed", "values": [3, 4]},
        "merge": {"a": webui.title("model_a"), "b": webui.title("model_b")},
        "gen": {"steps": 2, "width": 256, "height": 256, "batch_size": 1},
    }
    answer = api.post("/alloy/v1/xyz", json=plan)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    grid = Image.open(io.BytesIO(base64.b64decode(body["grid"])))
    assert grid.width > 64 and grid.height > 64 and body["merges"] == 2
    assert [(c["x"], c["y"], c["seed"]) for c in body["cells"]] == [(0, 0, 3), (1, 0, 3), (0, 1, 4), (1, 1, 4)]
    names = [c["name"] for c in body["cells"]]
    assert names[0] == names[2] != names[1] == names[3] and "a0.25" in names[0]
    assert body["paths"][0].endswith("alloy_xyz-00001.png")
    bad = api.post("/alloy/v1/xyz", json=dict(plan, x={"type": "alpha", "values": "0.1, zz"}))
    assert bad.status_code == 400 and bad.json()["error"] == (
        "X alpha axis: 'zz': not a number or a range like 0-1 (5) or 0-1 [0.25]")  # fmt: skip


def test_standalone_auth_guards_the_page_and_the_api(tmp_path, sd1):
    import base64

    from lib_merge.surfaces.standalone import create_app, is_loopback, parse_auth

    app, _ = create_app(str(tmp_path), auth=parse_auth("ann:pw1,bob:pw:2"))
    client = TestClient(app)
    for path in ("/", "/alloy/v1/status", "/alloy/v1/history"):
        denied = client.get(path)
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"ann:nope").decode()
    assert client.get("/alloy/v1/status", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert client.get("/alloy/v1/status", headers={"Authorization": "Basic %%%"}).status_code == 401
    assert client.get("/alloy/v1/status", auth=("bob", "pw:2")).status_code == 200
    assert client.get("/", auth=("ann", "pw1"), follow_redirects=True).status_code == 200
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost", "0.0.0.0", "192.0.2.1")] == [
        True, True, True, True, False, False,
    ]  # fmt: skip


def test_a_method_with_a_seed_past_2_53_stays_exact_in_recipe_history_and_metadata(api, webui):
    seed = 9007199254740993  # 2**53 + 1: a float would make it …992
    body = {"method": "dare", "a": webui.title("model_a"), "models": [webui.title("model_b")], "seed": seed,
            "p": 0.3, "save": {"name": "seeded", "dtype": "fp16"}}  # fmt: skip
    answer = api.post("/alloy/v1/merge", json=body)
    assert answer.status_code == 200, answer.text
    (row,) = api.get("/alloy/v1/history").json()["rows"]
    assert row["settings"]["method"]["params"]["seed"] == seed and f"seed={seed}" in row["recipe"]
    meta = metadata(answer.json()["path"])
    assert f"seed={seed}" in meta["alloy_recipe"]
    bad = api.post("/alloy/v1/merge", json=dict(body, seed=1.5))
    assert bad.status_code == 400 and bad.json()["error"] == "dare() parameter 'seed' must be a whole number, got 1.5"
    inside = {**body, "seed": None, "p": None, "params": {"seed": seed, "p": 0.3}, "save": {"name": "inside"}}
    same = api.post("/alloy/v1/merge", json=inside)  # the parameters under "params": the same merge
    assert same.status_code == 200 and same.json()["hash"] == answer.json()["hash"]
    typo = api.post("/alloy/v1/merge", json={**body, "params": {"densty": 0.3}})
    assert typo.status_code == 400
    assert (
        typo.json()["error"] == "dare() has no parameter 'densty'; parameters: alpha (1), p (0.5, 0 to 0.999999), "
        "seed (0, a whole number from 0)"
    )
    unknown = api.post("/alloy/v1/merge", json=dict(body, method="nope"))
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("unknown method 'nope'; methods: ties")


def test_a_bad_save_dtype_or_layout_is_refused_before_the_merge(api, webui):
    """Found only when the file was written, a wrong save field left a live merge standing unsaved."""
    body = {"a": webui.title("model_a"), "b": webui.title("model_b"), "mode": "ws", "alpha": 0.3}
    before = {k: t.clone() for k, t in model_tensors(webui.model).items()}
    for save, word in (({"name": "x", "dtype": "fp7"}, "fp7"), ({"name": "x", "layout": "diffusers"}, "diffusers")):
        answer = api.post("/alloy/v1/merge", json={**body, "save": save})
        assert answer.status_code == 400 and word in answer.json()["error"], answer.text
        live = model_tensors(webui.model)
        assert all(torch.equal(live[k], t) for k, t in before.items())
    assert not list(webui.folder.glob("x.*"))
