"""`optimize run --webui URL --webui URL`: a study driven over two running WebUIs (the double, served over
HTTP in two processes) through /alloy/v1 and /sdapi/v1, scored and logged where the driver runs, its two
workers drawing their own inputs; `optimize show` prints it back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_optimize import BRIGHT

from lib_merge.app.history import read_history, search_history

SERVER = Path(__file__).parent / "webui_server.py"
# The WebUIs label their grids with this font (A1111's is Roboto): a plot assembled elsewhere must use it too.
# .ci/run installs Debian's fonts-dejavu-core when it is missing.
LABEL_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_webuis(tmp_path, sd1):
    servers, urls = [], []
    for name in ("one", "two"):
        port = free_port()
        assert LABEL_FONT.is_file(), f"{LABEL_FONT} is missing: apt-get install fonts-dejavu-core"
        env = {**os.environ, "ALLOY_HOME": str(tmp_path / f"home-{name}"), "ALLOY_TEST_FONT": str(LABEL_FONT)}
        command = [sys.executable, str(SERVER), str(tmp_path / f"webui-{name}"), str(port), *map(str, sd1)]
        servers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    for server, url in zip(servers, urls, strict=True):
        while True:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the WebUI double did not start"
            try:
                urllib.request.urlopen(url + "/alloy/v1/status", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
    yield urls
    for server in servers:
        server.terminate()
        server.wait(30)


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALLOY_HOME": str(tmp_path / "driver")}
    return subprocess.run([sys.executable, "-m", "lib_merge", *args], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "/alloy/v1/status", timeout=10) as answer:
        return json.loads(answer.read())


def test_a_study_driven_over_two_webuis(tmp_path, two_webuis):
    (tmp_path / "driver" / "scorers").mkdir(parents=True)
    (tmp_path / "driver" / "scorers" / "bright.py").write_text(BRIGHT)
    recipe = ('alloy-recipe 1\nA = model("model_a.safetensors")\nB = model("model_b.safetensors")\n'
              'merged = weighted_sum(A, B, alpha=param("w"))\n')  # fmt: skip
    plan = {"recipe": recipe, "space": {"w": {"blocks": True, "groups": [["IN00", "IN01"], ["M00"]]}},
            "trials": 6, "sampler": "tpe", "seed": 2, "scorer": "plugin:bright",
            "gen": {"prompt": ["a cat", "a dog"], "seeds": [1], "holdout_seeds": [7, 8], "steps": 2, "width": 64,
                    "height": 64}}  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    flags = ["--storage", "", "--study", "remote"]  # the driver's own SQLite file: two workers, one process
    webuis = [part for url in two_webuis for part in ("--webui", url)]
    done = cli(tmp_path, "optimize", "run", *webuis, *flags, "--plan", str(tmp_path / "plan.json"), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    # Two workers that claim the last trial at once: the later claim runs nothing (PRUNED, not counted).
    trials = [t for t in answer["trials"] if t["state"] == "COMPLETE"]
    assert answer["state"] == "done" and len(trials) == 6
    assert all(t["state"] == "PRUNED" and t["values"] is None for t in answer["trials"] if t not in trials)
    assert {t["instance"] for t in trials} == set(two_webuis)  # both WebUIs worked on it
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 6  # each its own draw
    assert set(trials[0]["params"]) == {"w[IN00+IN01]", "w[M00]", "w[rest]"}
    assert answer["report"]["objectives"]["plugin:bright"]["best"]["images"] == 4  # 2 held-out seeds × 2 prompts
    # Each trial scored here, on the images the WebUI made (kept here): the mean brightness of its 2 images.
    for t in trials:
        images = sorted((tmp_path / "driver" / "optimize" / "remote" / f"trial-{t['number']:04d}").glob("*.png"))
        brightness = [np.asarray(Image.open(p).convert("L"), dtype=np.float64).mean() / 255 for p in images]
        assert len(images) == 2 and t["values"][0] == pytest.approx(float(np.mean(brightness)), abs=1e-12)
    # Logged where the driver runs, one row per trial; the WebUIs log nothing and have model A back.
    rows = search_history(read_history(tmp_path / "driver" / "history.csv").rows, "remote")
    assert sorted(r.settings["trial"] for r in rows) == list(range(6))
    for name in ("one", "two"):
        assert not (tmp_path / f"webui-{name}" / "history.csv").exists()
    assert [status(url)["merged"] for url in two_webuis] == [False, False]
    # `optimize show` reads it back from the storage.
    shown = cli(tmp_path, "optimize", "show", *flags, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["trials"] == answer["trials"]
    table = cli(tmp_path, "optimize", "show", *flags)
    assert table.stdout.count("COMPLETE") == 6 and "study remote: done" in table.stdout

    # Bad input: one line, no traceback, before anything runs.
    for args, words in [
        (["--webui", "ftp://x"], "--webui 'ftp://x': give the WebUI's address"),
        (["--webui", f"http://127.0.0.1:{free_port()}"], "cannot reach the WebUI"),
        ([*webuis[:2], *webuis[:2]], "a --webui is named twice"),
    ]:
        bad = cli(
            tmp_path, "optimize", "run", *args, *flags[:2], "--study", "bad", "--plan", str(tmp_path / "plan.json")
        )
        assert bad.returncode != 0 and words in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    missing = cli(tmp_path, "optimize", "run", *webuis, "--study", "bad", "--plan", str(tmp_path / "none.json"))
    assert missing.returncode != 0 and "none.json: no such plan file" in missing.stderr
