"""End to end in headless Chromium: the standalone app merges two miniature models and saves the file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from helpers import load, metadata

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path, sd1):
    models = tmp_path / "models"
    models.mkdir()
    for p in sd1[:2]:
        shutil.copy(p, models / p.name)
    port = free_port()
    env = dict(os.environ, ALLOY_HOME=str(tmp_path / "home"))
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "lib_merge", "--models-dir", str(models), "ui", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise AssertionError("the app did not start: " + (tmp_path / "server.log").read_text()) from None
            time.sleep(0.3)
    yield url, models
    server.terminate()
    server.wait(10)
    log.close()


def test_merge_and_save_in_the_browser(app_url, sd1):
    from playwright.sync_api import sync_playwright

    url, models = app_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#alloy_model_a")

        def choose(elem_id: str, value: str) -> None:
            page.locator(f"#{elem_id} input").click()
            page.locator(f"#{elem_id} li").filter(has_text=value).first.click()

        choose("alloy_model_a", sd1[0].name)
        choose("alloy_model_b", sd1[1].name)
        page.locator("#alloy_alpha input[type=number]").fill("0.25")
        page.locator("#alloy_alpha input[type=number]").press("Enter")
        page.locator("#alloy_save_name textarea, #alloy_save_name input").first.fill("from_browser")
        page.locator("#alloy_merge").click()
        page.wait_for_function(
            "() => /Saved|Error/.test(document.querySelector('#alloy_status').innerText)", timeout=120_000
        )
        status = page.locator("#alloy_status").first.inner_text()
        page.locator("#alloy_tab_history-button, button:has-text('History')").first.click()
        page.locator("#alloy_history_search").click()
        page.wait_for_function(
            "() => document.querySelector('#alloy_history_table').innerText.includes('from_browser')",
            timeout=30_000,
        )
        browser.close()
    assert status.startswith("Saved"), status
    out = models / "from_browser.safetensors"
    merged, a, b = load(out), load(sd1[0]), load(sd1[1])
    for key in ("model.diffusion_model.out.2.weight", "cond_stage_model.transformer.text_model.final_layer_norm.bias"):
        expected = a[key].double() * 0.75 + b[key].double() * 0.25
        assert torch.allclose(merged[key].double(), expected, atol=2e-3, rtol=1e-3), key
    assert "alpha=0.25" in metadata(out)["alloy_recipe"]
