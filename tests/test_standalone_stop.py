"""Stopping the standalone server (`python -m lib_merge ui`) with SIGTERM, as a service manager does: the
running merge is cancelled and its temporary file removed, and the stop is a normal end, not an error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from test_browser import free_port
from test_cli import ROOT, cli

from lib_merge.io.tempfiles import TEMP_MARK


def _wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def test_sigterm_mid_merge_cancels_it_removes_its_temporary_file_and_exits_cleanly(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name, seed in (("a", 1), ("b", 2)):  # large enough that smoothAdd runs for seconds
        assert cli("synth", "sd1", models / f"{name}.safetensors", "--scale", "8", "--seed", seed).returncode == 0
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(tmp_path / "home"))
    server = subprocess.Popen(
        [sys.executable, "-m", "lib_merge", "--models-dir", str(models), "ui", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _wait_for(lambda: _answers(f"http://127.0.0.1:{port}/alloy/v1/status"), 120, "the server")
        body = {"a": "a.safetensors", "b": "b.safetensors", "c": "a.safetensors", "mode": "add_difference",
                "calc": "smoothAdd"}  # fmt: skip
        answer: dict = {}

        def merge() -> None:
            url = f"http://127.0.0.1:{port}/alloy/v1/merge"
            request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=300)
                answer["status"] = 200
            except urllib.error.HTTPError as e:
                answer["status"], answer["body"] = e.code, json.loads(e.read())

        client = threading.Thread(target=merge)
        client.start()
        _wait_for(lambda: [p for p in models.iterdir() if TEMP_MARK in p.name], 120, "the merge's temporary file")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
        client.join(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert "Alloy stopped" in out
    assert "error" not in err.lower() and "Traceback" not in err, err
    assert sorted(p.name for p in models.iterdir()) == ["a.safetensors", "b.safetensors"]  # no temp file, no merge
    assert answer.get("status") == 400 and "cancelled" in answer["body"]["error"]
