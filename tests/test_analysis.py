"""Analysis of two models: per key and per block similarity, attention similarity, CSV and heatmap."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from helpers import load
from PIL import Image
from test_lora_merge_extract import run

from lib_merge.analysis.attention import SEED
from lib_merge.analysis.report import CSV_HEADER, csv_text, heatmap
from lib_merge.analysis.similarity import compare
from lib_merge.errors import ArchMismatchError


@pytest.mark.parametrize("arch", ["sd1", "sdxl", "flux"])
def test_a_model_against_itself_is_identical_everywhere(models, arch):
    path = models(f"{arch}_self", arch=arch, seed=5)
    result = compare(str(path), str(path), attention=True)
    assert result.keys and all(k.cosine == pytest.approx(1.0, abs=1e-12) and k.rel_l2 == 0 for k in result.keys)
    with_attention = [k for k in result.keys if k.attention is not None]
    assert with_attention and all(k.attention == pytest.approx(100.0, abs=1e-9) for k in with_attention)
    assert all(b.cosine_min == pytest.approx(1.0) for b in result.blocks)


def test_two_models_agree_with_a_per_key_and_per_module_reference(sd1_fp32):
    a_path, b_path = sd1_fp32[0], sd1_fp32[1]
    result = compare(str(a_path), str(b_path), attention=True)
    a, b = load(a_path), load(b_path)
    for row in result.keys[::50]:
        x, y = a[row.key].double().flatten(), b[row.key].double().flatten()
        assert row.cosine == pytest.approx(float(torch.nn.functional.cosine_similarity(x, y, dim=0)), abs=1e-9)
        assert row.rel_l2 == pytest.approx(float((x - y).norm() / x.norm()), rel=1e-9)
    # one cross-attention module by hand: 1 head (the miniature's width is no multiple of 8)
    prefix = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2."

    def out(t):
        g = torch.Generator().manual_seed(SEED)
        x = torch.randn(64, t[prefix + "to_q.weight"].shape[1], generator=g)
        ctx = torch.randn(64, t[prefix + "to_k.weight"].shape[1], generator=g)
        q, k, v = x @ t[prefix + "to_q.weight"].T, ctx @ t[prefix + "to_k.weight"].T, ctx @ t[prefix + "to_v.weight"].T
        o = torch.softmax(q @ k.T / math.sqrt(q.shape[1]), -1) @ v
        return o @ t[prefix + "to_out.0.weight"].T + t[prefix + "to_out.0.bias"]

    expected = float(torch.nn.functional.cosine_similarity(out(a).double(), out(b).double(), dim=1).mean()) * 100
    row = next(k for k in result.keys if k.key == prefix + "to_q.weight")
    assert row.attention == pytest.approx(expected, abs=1e-6) and row.attention < 99
    block = next(bl for bl in result.blocks if bl.slot == "IN01")
    members = [k for k in result.keys if k.slot == "IN01"]
    assert block.keys == len(members) and block.cosine_min == min(k.cosine for k in members)
    assert block.cosine_mean == pytest.approx(sum(k.cosine for k in members) / len(members))


def test_csv_heatmap_cli_and_a_mismatch(sd1, sdxl, tmp_path):
    result = compare(str(sd1[0]), str(sd1[1]))
    rows = list(csv.reader(csv_text(result).splitlines()))
    assert tuple(rows[0]) == CSV_HEADER and len(rows) == len(result.keys) + 1 and rows[1][5] == ""
    image = heatmap(result)
    assert image.size[1] > 22 * len(result.blocks)
    result.a, result.b = "モデル – α.safetensors", "b.safetensors"  # names the bitmap font cannot draw
    assert heatmap(result).size == image.size
    proc = run("analyze", sd1[0], sd1[1], "--csv", tmp_path / "a.csv", "--heatmap", tmp_path / "a.png", "--attention")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("block\tkeys\tcosine mean %") and lines[1].startswith("BASE\t")
    assert Image.open(tmp_path / "a.png").format == "PNG"
    assert (tmp_path / "a.csv").read_text().startswith(",".join(CSV_HEADER))
    with pytest.raises(ArchMismatchError, match="SDXL"):
        compare(str(sd1[0]), str(sdxl[0]))


def test_the_analyze_route_answers_the_block_table(webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_merge.surfaces.http import add_routes

    app = FastAPI()
    add_routes(app, webui.workbench)
    client = TestClient(app)
    answer = client.post("/alloy/v1/analyze", json={"a": webui.title("model_a"), "b": webui.title("model_b")})
    assert answer.status_code == 200, answer.text
    blocks = answer.json()["blocks"]
    assert blocks[0]["block"] == "BASE" and 0 < blocks[0]["cosine_mean"] < 100 and blocks[0]["attention"] is None
    assert client.post("/alloy/v1/analyze", json={"a": "x"}).status_code == 400
    outside = client.post("/alloy/v1/analyze", json={"a": "/etc/passwd", "b": webui.title("model_b")})
    assert outside.status_code in (400, 404) and "passwd" in outside.json()["error"]
