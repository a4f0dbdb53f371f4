"""`xyz run --webui URL --webui URL PLAN -o grid.png`: an XYZ plot fanned out over two running WebUIs (the
double, served over HTTP in two processes), the grid assembled locally: the same pixels as the plot run in
one WebUI through POST /alloy/v1/xyz."""

from __future__ import annotations

import base64
import io
import json
import urllib.request

import numpy as np
from PIL import Image
from test_optimize_remote import cli, two_webuis  # noqa: F401 - the fixture


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())


def test_a_plot_fanned_out_over_two_webuis_matches_one_webui(tmp_path, two_webuis):  # noqa: F811
    plan = {"x": {"type": "alpha", "values": "0.2, 0.4, 0.6, 0.8"}, "y": {"type": "seed", "values": "1, 2"},
            "merge": {"a": "model_a.safetensors", "b": "model_b.safetensors", "mode": "weighted_sum"},
            "gen": {"prompt": "a cat", "steps": 2, "width": 64, "height": 64},
            "options": {"restore_after": True}}  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    webuis = [part for url in two_webuis for part in ("--webui", url)]
    out = tmp_path / "grid.png"
    done = cli(tmp_path, "xyz", "run", *webuis, str(tmp_path / "plan.json"), "-o", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(out)
    summary = done.stdout.strip().splitlines()[0]
    assert summary.startswith("plot 1/1: 8/8 cells, 4 merges"), summary
    shares = [int(part.rsplit(" ", 1)[1]) for part in summary.split("WebUI: ")[1].rstrip(")").split(", ")]
    assert sum(shares) == 4 and all(share >= 1 for share in shares)  # both WebUIs merged and generated
    single = post(two_webuis[0] + "/alloy/v1/xyz", plan)
    one = np.asarray(Image.open(io.BytesIO(base64.b64decode(single["grid"]))).convert("RGB"))
    fanned = np.asarray(Image.open(out).convert("RGB"))
    assert fanned.shape == one.shape and np.array_equal(fanned, one)
    again = cli(tmp_path, "xyz", "run", *webuis, str(tmp_path / "plan.json"), "-o", str(out))
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
