"""One path from every surface: the CLI and the HTTP route save the same merge through the same
application service, so the same request gives the same history row and the same file bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "weighted sum": (["--mode", "weighted_sum", "--alpha", "0.3"], {"mode": "weighted_sum", "alpha": 0.3}),
    "blocks and fp32": (
        ["--mode", "add_difference", "--blocks", "IN00=0.2 *=0.6", "--dtype", "fp32"],
        {"mode": "add_difference", "blocks": "IN00=0.2 *=0.6"},
    ),
    "ties": (
        ["--method", "ties", "--param", "density=0.4", "--param", "sign=mean"],
        {"method": "ties", "params": {"density": 0.4, "sign": "mean"}},
    ),
}


def _rows(home: Path) -> list[dict]:
    from lib_merge.app.history import read_history

    return [row.__dict__ for row in read_history(home / "history.csv").rows]


@pytest.mark.parametrize("case", list(CASES))
def test_cli_and_http_write_the_same_row_and_bytes(case, sd1, tmp_path, monkeypatch):
    flags, fields = CASES[case]
    models = tmp_path / "models"
    models.mkdir()
    for p in sd1:
        shutil.copy(p, models / p.name)
    a, b, c = (models / p.name for p in sd1)
    dtype = "fp32" if "--dtype" in flags else "fp16"

    cli_home, cli_out = tmp_path / "cli-home", models / "cli" / "same.safetensors"
    cli_out.parent.mkdir()
    three = "add_difference" in flags
    given = [a.name, "--models", b.name, c.name] if "--method" in flags else [a.name, "--b", b.name]
    given = ["--models-dir", models, "--a", *given] + (["--c", c.name] if three else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(cli_home), SOURCE_DATE_EPOCH="1790000000")
    command = [sys.executable, "-m", "lib_merge", "merge", *map(str, given), *flags, "-o", str(cli_out)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    http_home = tmp_path / "http-home"
    client, _ = _standalone(models, http_home, monkeypatch)
    roles = {"a": a.name, "models": [b.name, c.name]} if "method" in fields else {"a": a.name, "b": b.name}
    if three:
        roles["c"] = c.name
    body = dict(fields, **roles, save={"name": "same", "dtype": dtype})
    answer = client.post("/alloy/v1/merge", json=body)
    assert answer.status_code == 200, answer.text
    http_out = Path(answer.json()["path"])

    from helpers import metadata

    assert metadata(http_out) == metadata(cli_out)
    assert http_out.read_bytes() == cli_out.read_bytes()
    (cli_row,), (http_row,) = _rows(cli_home), _rows(http_home)
    for row in (cli_row, http_row):
        row.pop("time")
        row["output"] = os.path.basename(row["output"])
    print(json.dumps(cli_row, indent=1), json.dumps(http_row, indent=1))
    assert cli_row == http_row


def _standalone(models: Path, home: Path, monkeypatch):
    from lib_merge.surfaces.standalone import create_app

    monkeypatch.setenv("ALLOY_HOME", str(home))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    app, workbench = create_app(str(models))
    return TestClient(app), workbench


@pytest.mark.parametrize(
    "flags, fields",
    [
        (["--rank", "4", "--clamp", "0.9"], {"rank": 4, "clamp": 0.9}),
        (["--energy", "0.8", "--max-rank", "6", "--alpha", "0.5"], {"energy": 0.8, "max_rank": 6, "alpha": 0.5}),
    ],
)
def test_cli_and_http_extract_the_same_lora(flags, fields, sd1, tmp_path, monkeypatch):
    """`lora extract` and /alloy/v1/lora/extract read one request type with one set of defaults."""
    models = tmp_path / "models"
    (models / "Lora").mkdir(parents=True)
    for p in sd1[:2]:
        shutil.copy(p, models / p.name)
    out = tmp_path / "cli.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(tmp_path / "cli-home"), SOURCE_DATE_EPOCH="1790000000")
    given = ["lora", "extract", "--a", models / sd1[0].name, "--b", models / sd1[1].name, *flags, "-o", out]
    proc = subprocess.run([sys.executable, "-m", "lib_merge", *map(str, given)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    client, _ = _standalone(models, tmp_path / "http-home", monkeypatch)
    body = dict(fields, a=sd1[0].name, b=sd1[1].name, name="http")
    answer = client.post("/alloy/v1/lora/extract", json=body)
    assert answer.status_code == 200, answer.text
    written = Path(answer.json()["path"])
    assert written.parent == models / "Lora"
    from helpers import load, metadata

    cli_meta, http_meta = metadata(out), metadata(written)
    for meta in (cli_meta, http_meta):
        meta.pop("modelspec.title"), meta.pop("ss_output_name")  # the file's own name
    assert cli_meta == http_meta
    cli_tensors, http_tensors = load(out), load(written)
    assert cli_tensors.keys() == http_tensors.keys()
    assert all(cli_tensors[k].equal(http_tensors[k]) for k in cli_tensors)


def test_http_analysis_is_the_analysis_tabs_job(sd1, tmp_path, monkeypatch):
    """/alloy/v1/analyze runs the Analysis tab's job: the same table, the CSV, heatmap and chart saved
    under the user's data, and a busy answer while a merge holds the model."""
    import torch
    from helpers import load

    from lib_merge.arch.blocks import schema_for

    models = tmp_path / "models"
    models.mkdir()
    for p in sd1[:2]:
        shutil.copy(p, models / p.name)
    client, workbench = _standalone(models, tmp_path / "home", monkeypatch)
    answer = client.post("/alloy/v1/analyze", json={"a": sd1[0].name, "b": sd1[1].name})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    files = body["files"]
    assert {Path(p).parent for p in files.values()} == {tmp_path / "home" / "analysis"}
    assert all(Path(p).stat().st_size > 0 for p in files.values())
    a, b = load(sd1[0]), load(sd1[1])
    schema = schema_for("sd1")
    in00 = [k for k in a if schema.slot_of(k) == "IN00"]
    cosines = [torch.nn.functional.cosine_similarity(a[k].double().flatten(), b[k].double().flatten(), dim=0)
               for k in in00]  # fmt: skip
    row = next(r for r in body["blocks"] if r["block"] == "IN00")
    assert row["keys"] >= len(in00) and abs(row["cosine_min"] - min(cosines).item() * 100) < 1e-2, row

    with workbench._lock:  # a merge holds the model
        busy = client.post("/alloy/v1/analyze", json={"a": sd1[0].name, "b": sd1[1].name})
    assert busy.status_code == 409 and "merge is running" in busy.json()["error"], busy.text
