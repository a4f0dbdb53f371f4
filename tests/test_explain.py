"""Explain a merge: per-block least squares of M − A against B − A (or B − C), checked against a numpy
float64 reference, on miniature SD1 and SDXL checkpoints merged by Alloy with known block vectors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import load
from test_lora_merge_extract import run

from lib_merge.analysis.explain import THRESHOLD, ExplainInputs, explain
from lib_merge.analysis.explain_chart import axis, chart
from lib_merge.app.explain import COLUMNS, ExplainRequest, explain_files, recipe_text, rows
from lib_merge.arch.blocks import SCHEMAS, VAE_SLOT
from lib_merge.arch.registry import ARCHITECTURES, is_mergeable
from lib_merge.errors import ArchMismatchError, ParameterError, ShapeMismatchError

SD1_VECTOR = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.15, 0.25, 0.35,
              0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 0.0, 0.33, 0.66, 0.12, 0.5, 0.7, 0.9]  # fmt: skip
SDXL_VECTOR = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.35, 0.45, 0.0, 0.25, 0.75, 0.15, 0.85, 0.05, 0.65,
               0.55, 1.0]  # fmt: skip


def merged(folder, a, b, vector, mode="ws", c=None, name="m.safetensors"):
    """A merge written by Alloy's own command line with a known block vector."""
    out = folder / name
    extra = ["--c", c] if c else []
    proc = run("merge", "--a", a, "--b", b, *extra, "--mode", mode, "--blocks", ",".join(map(str, vector)),
               "-o", out, "--no-history", "--overwrite")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def reference(m, a, direction_a, direction_b, arch_id):
    """numpy float64 least squares per block: alpha = Σ⟨M−A, e⟩ / Σ‖e‖², explained = 1 − ‖d − αe‖² / ‖d‖²,
    with e = direction_a − direction_b, over every mergeable key of a block."""
    tm, ta, t1, t2 = (load(p) for p in (m, a, direction_a, direction_b))
    schema = SCHEMAS[ARCHITECTURES[arch_id].schema_id]
    arch = ARCHITECTURES[arch_id]
    groups: dict[str, tuple[list, list]] = {}
    for key, value in tm.items():
        slot = schema.slot_of(key)
        if slot is None or arch.component_of(key) is None or not is_mergeable(key, value.dtype):
            continue
        d = value.double().numpy().ravel() - ta[key].double().numpy().ravel()
        e = t1[key].double().numpy().ravel() - t2[key].double().numpy().ravel()
        groups.setdefault(slot, ([], []))[0].append(d)
        groups[slot][1].append(e)
    out = {}
    for slot, (ds, es) in groups.items():
        d, e = np.concatenate(ds), np.concatenate(es)
        alpha = float(np.dot(d, e) / np.dot(e, e))
        dd = float(np.dot(d, d))
        out[slot] = (alpha, 1 - float(np.sum((d - alpha * e) ** 2)) / dd if dd else 1.0)
    return out


def expected_alpha(vector, schema_id, slot):
    schema = SCHEMAS[schema_id]
    return vector[0] if slot == VAE_SLOT else vector[schema.index(slot)]


@pytest.mark.parametrize(("fixture", "vector"), [("sd1", SD1_VECTOR), ("sdxl", SDXL_VECTOR)])
def test_a_known_block_vector_is_recovered_and_its_recipe_gives_m_again(request, tmp_path, fixture, vector):
    a, b, _ = request.getfixturevalue(fixture)
    m = merged(tmp_path, a, b, vector)
    found = explain(ExplainInputs(str(m), str(a), str(b)))
    assert found.mode == "weighted_sum" and found.is_merge and found.explained > 0.999
    assert [fit.block for fit in found.blocks] == list(SCHEMAS[fixture].names_with_vae())
    truth = reference(m, a, b, a, fixture)
    for fit in found.blocks:
        assert abs(fit.alpha - expected_alpha(vector, fixture, fit.block)) < 0.01, fit
        if fit.note == "M equals A here":  # alpha 0: the merge copied A's bytes
            assert fit.alpha == 0 and fit.explained == 1
            continue
        assert fit.alpha == pytest.approx(truth[fit.block][0], abs=1e-9)
        assert fit.explained == pytest.approx(truth[fit.block][1], abs=1e-9)
    assert found.verdict().startswith("M is a weighted sum of A and B")
    # the recipe, merged again, gives M back (block weights rounded to 4 decimals)
    for p in (a, b):
        shutil.copy(p, tmp_path / p.name)
    text = recipe_text(found, a.name, b.name)
    (tmp_path / "fit.alloy").write_text(text)
    proc = run("merge", tmp_path / "fit.alloy", "--models-dir", tmp_path, "-o", tmp_path / "again.safetensors",
               "--no-history")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    original, again = load(m), load(tmp_path / "again.safetensors")
    assert set(original) == set(again)
    worst = max((original[k].float() - again[k].float()).abs().max().item() for k in original)
    assert worst <= 2e-3  # one fp16 step of the miniature's weights at most


def test_add_difference_with_c_and_the_choice_of_mode(tmp_path, sd1):
    a, b, c = sd1
    vector = [round(0.05 * i, 2) for i in range(26)]
    m = merged(tmp_path, a, b, vector, mode="add", c=c)
    found = explain(ExplainInputs(str(m), str(a), str(b), str(c)))
    assert found.mode == "add_difference" and found.is_merge
    assert found.alternatives["weighted_sum"] < THRESHOLD < found.alternatives["add_difference"]
    truth = reference(m, a, b, c, "sd1")
    for fit in found.blocks:
        assert abs(fit.alpha - expected_alpha(vector, "sd1", fit.block)) < 0.01
        if fit.note != "M equals A here":
            assert fit.alpha == pytest.approx(truth[fit.block][0], abs=1e-9)
    assert "add_difference(A, B, C" in recipe_text(found, "a", "b", "c")
    # the same M forced to a weighted sum: no such merge
    forced = explain(ExplainInputs(str(m), str(a), str(b), str(c), mode="weighted_sum"))
    assert not forced.is_merge and list(forced.alternatives) == ["weighted_sum"]
    # a weighted sum explained with a C given: the weighted sum wins, and its recipe leaves C out
    ws = merged(tmp_path, a, b, SD1_VECTOR, name="ws.safetensors")
    chosen = explain(ExplainInputs(str(ws), str(a), str(b), str(c)))
    assert chosen.mode == "weighted_sum" and chosen.alternatives["add_difference"] < THRESHOLD
    assert "model(" in (text := recipe_text(chosen, "a", "b", "c")) and '"c"' not in text
    with pytest.raises(ParameterError, match="needs model C"):
        explain(ExplainInputs(str(m), str(a), str(b), mode="add_difference"))


def test_unrelated_models_are_called_no_such_merge(sd1):
    a, b, c = sd1
    found = explain(ExplainInputs(str(c), str(a), str(b)))
    assert not found.is_merge and found.explained < 0.5
    assert found.verdict().startswith("M is not a weighted sum of A and B")
    assert "the best fit explains" in found.verdict() and " %" in found.verdict()
    truth = reference(c, a, b, a, "sd1")
    assert len(truth) == len(found.blocks)
    for fit in found.blocks:
        assert fit.explained == pytest.approx(truth[fit.block][1], abs=1e-9)


def test_m_equal_to_a_and_b_equal_to_a(sd1):
    a, b, _ = sd1
    same = explain(ExplainInputs(str(a), str(a), str(b)))
    assert all(f.alpha == 0 and f.explained == 1 and f.note == "M equals A here" for f in same.blocks)
    assert same.explained == 1 and same.is_merge and same.verdict().startswith("M equals A")
    nothing = explain(ExplainInputs(str(b), str(a), str(a)))  # B equals A: no direction to fit
    assert all(f.alpha == 0 and f.explained == 0 and "B equals A" in f.note for f in nothing.blocks)
    assert not nothing.is_merge


def test_an_inpainting_a_with_a_plain_b(tmp_path, models, sd1):
    inpaint = models("sd1_inpaint", arch="sd1", seed=31, input_channels=9)
    proc = run("merge", "--a", inpaint, "--b", sd1[1], "--alpha", "0.3", "-o", tmp_path / "mi.safetensors",
               "--no-history")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = explain(ExplainInputs(str(tmp_path / "mi.safetensors"), str(inpaint), str(sd1[1])))
    assert found.is_merge and all(abs(f.alpha - 0.3) < 0.01 for f in found.blocks)


def test_input_problems_are_named_before_any_read(tmp_path, sd1, sdxl, models):
    a, b, _ = sd1
    with pytest.raises(ArchMismatchError, match=r"M \(.*sdxl_a.safetensors\) is SDXL but A"):
        explain(ExplainInputs(str(sdxl[0]), str(a), str(b)))
    small = models("sd1_small", arch="sd1", seed=41, scale=64)
    with pytest.raises(ShapeMismatchError, match="sd1_small.safetensors"):
        explain(ExplainInputs(str(a), str(a), str(small)))
    from helpers import write_lora

    write_lora(tmp_path / "lora.safetensors", a, ["lora_unet_input_blocks_1_1_proj_in"])
    with pytest.raises(ArchMismatchError, match="known architecture"):
        explain(ExplainInputs(str(tmp_path / "lora.safetensors"), str(a), str(b)))
    with pytest.raises(ParameterError, match="unknown mode"):
        explain(ExplainInputs(str(a), str(a), str(b), mode="triple_sum"))


def test_the_command_line_json_and_table(tmp_path, sd1):
    a, b, c = sd1
    m = merged(tmp_path, a, b, SD1_VECTOR)
    proc = run("explain", m, "--a", a, "--b", b, "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert {"mode", "explained", "blocks", "recipe"} <= set(answer)
    assert answer["mode"] == "weighted_sum" and 0.999 < answer["explained"] <= 1 and answer["is_merge"]
    assert list(answer["blocks"]) == list(SCHEMAS["sd1"].names_with_vae())
    assert all({"alpha", "explained"} <= set(v) for v in answer["blocks"].values())
    assert abs(answer["blocks"]["IN00"]["alpha"] - 0.2) < 0.01
    assert answer["recipe"].startswith("alloy-recipe 1") and "weighted_sum(A, B" in answer["recipe"]
    table = run("explain", m, "--a", a, "--b", b, "--c", c, "--recipe", tmp_path / "fit.alloy",
                "--chart", tmp_path / "fit.png")  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "\t".join(COLUMNS) and lines[1].startswith("BASE\t")
    assert any(line.startswith("M is a weighted sum of A and B") for line in lines)
    assert (tmp_path / "fit.alloy").read_text() == answer["recipe"]  # the same recipe whatever C did
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
    poor = run("explain", c, "--a", a, "--b", b)  # a finding, not an error
    assert poor.returncode == 0 and "M is not a weighted sum of A and B: the best fit explains" in poor.stdout
    for args, code, words in [
        ((tmp_path / "nope.safetensors", "--a", a, "--b", b), 4, "not found"),
        ((m, "--a", a, "--b", b, "--mode", "add"), 3, "needs model C"),
        ((m, "--a", a), 2, "--b"),
        ((m, "--a", a, "--b", b, "--recipe", tmp_path / "fit.alloy"), 5, "exists"),
    ]:
        proc = run("explain", *args)
        assert proc.returncode == code and proc.stderr.startswith("error:") and words in proc.stderr, proc.stderr


def test_table_rows_and_the_chart(tmp_path, sd1):
    a, b, _ = sd1
    m = merged(tmp_path, a, b, SD1_VECTOR)
    outcome = explain_files(ExplainRequest(str(m), str(a), str(b)))
    table = rows(outcome.explanation)
    assert table[0][:3] == ["BASE", outcome.explanation.blocks[0].keys, 0.1] and len(table[0]) == len(COLUMNS)
    assert all(0 <= row[3] <= 100 for row in table)
    image = chart(outcome.explanation)
    assert image.width >= 640 and image.height > 20 * len(table)
    assert axis([0.2, 0.8]) == (0.0, 1.0, 0.25) and axis([-0.3, 1.2]) == (-0.5, 1.25, 0.25)
    assert axis([-3.0, 7.0])[0] <= -3 and axis([-3.0, 7.0])[1] >= 7


def test_the_http_route(tmp_path, sd1, sdxl):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_merge.app.workbench import Workbench
    from lib_merge.host.folder import FolderHost
    from lib_merge.surfaces.http import add_routes

    for p in (*sd1, sdxl[0]):
        shutil.copy(p, tmp_path / p.name)
    a, b, c = (p.name for p in sd1)
    m = merged(tmp_path, tmp_path / a, tmp_path / b, SD1_VECTOR).name
    app = FastAPI()
    add_routes(app, Workbench(FolderHost(str(tmp_path))))
    client = TestClient(app, raise_server_exceptions=False)
    good = client.post("/alloy/v1/explain", json={"m": m, "a": a, "b": b, "c": c})
    assert good.status_code == 200, good.text
    body = good.json()
    assert body["mode"] == "weighted_sum" and body["explained"] > 0.999
    assert abs(body["blocks"]["OUT06"]["alpha"] - 0.33) < 0.01
    assert f'model("{a}")' in body["recipe"]  # the checkpoint titles, as the Merge tab's recipe box takes them
    poor = client.post("/alloy/v1/explain", json={"m": c, "a": a, "b": b})
    assert poor.status_code == 200 and not poor.json()["is_merge"]
    for bad in [
        {"a": a, "b": b},
        {"m": m, "a": a},
        {"m": 5, "a": a, "b": b},
        {"m": m, "a": a, "b": b, "c": ["x"]},
        {"m": m, "a": a, "b": b, "mode": 3},
        {"m": m, "a": a, "b": b, "mode": "nonsense"},
        {"m": m, "a": a, "b": b, "extra": 1},
        {"m": "missing.safetensors", "a": a, "b": b},
        {"m": sdxl[0].name, "a": a, "b": b},
        {"m": "../../etc/passwd", "a": a, "b": b},
        ["not", "an", "object"],
        "text",
    ]:
        answer = client.post("/alloy/v1/explain", json=bad)
        assert answer.status_code == 400, (bad, answer.text)
        error = answer.json()["error"]
        assert error and "\n" not in error, bad


def test_the_analysis_tab_explains_and_loads_the_recipe(tmp_path, sd1):
    from test_ui import handler, last

    from lib_merge.app.workbench import Workbench
    from lib_merge.host.folder import FolderHost
    from lib_merge.ui.app import build_ui

    for p in sd1:
        shutil.copy(p, tmp_path / p.name)
    m = merged(tmp_path, tmp_path / sd1[0].name, tmp_path / sd1[1].name, SD1_VECTOR).name
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    fn, inputs = handler(demo, "alloy_ex_run")
    assert [i.elem_id for i in inputs] == ["alloy_ex_m", "alloy_ex_a", "alloy_ex_b", "alloy_ex_c", "alloy_ex_mode"]
    status, table, image, recipe = last(fn(m, sd1[0].name, sd1[1].name, None, "auto"))
    assert status.startswith("M is a weighted sum") and table[0][0] == "BASE" and image.width >= 640
    assert recipe.startswith("alloy-recipe 1")
    assert last(fn(m, None, sd1[1].name, None, "auto"))[0].startswith("**Error:**")
    assert "**Error:**" in last(fn("missing.safetensors", sd1[0].name, sd1[1].name, None, "auto"))[0]
    load_fn, load_inputs = handler(demo, "alloy_ex_load")
    loaded = load_fn(recipe)
    assert loaded[0] == recipe and "Merge tab" in loaded[1] and loaded[2] is True
