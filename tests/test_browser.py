"""End to end in headless Chromium: the standalone app merges two miniature models and saves the file.

Without /usr/bin/chromium these tests are skipped with how to get it, except in CI (CI=true), where a
missing browser is a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
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
USER, PASSWORD = "tester", "s3cret:with colon"
INSTALL = (
    "install Debian's Chromium (`sudo apt-get install chromium`; it lands at /usr/bin/chromium), "
    "then run the tests again"
)


@pytest.fixture(autouse=True)
def chromium():
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: {INSTALL}")
    pytest.skip(f"the browser tests need {CHROMIUM}: {INSTALL}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path, sd1):
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)  # a test may put more models there first
    for p in sd1[:2]:
        shutil.copy(p, models / p.name)
    port = free_port()
    env = dict(os.environ, ALLOY_HOME=str(tmp_path / "home"))
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lib_merge",
            "--models-dir",
            str(models),
            "ui",
            "--port",
            str(port),
            "--auth",
            f"{USER}:{PASSWORD}",
        ],  # fmt: skip
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
            raise AssertionError("the app answered without credentials")
        except urllib.error.HTTPError as e:
            assert e.code == 401
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()  # the fixture's teardown does not run when its setup fails
                raise AssertionError("the app did not start: " + (tmp_path / "server.log").read_text()) from None
            time.sleep(0.3)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(url + "alloy/v1/status", headers={"Authorization": f"Basic {token}"})
    assert urllib.request.urlopen(request, timeout=5).status == 200
    yield url, models
    server.terminate()
    try:
        server.wait(30)  # the app gives its shutdown 10 s, then exits anyway
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)
        raise AssertionError("the app did not stop within 30 s of SIGTERM") from None
    finally:
        log.close()


def test_merge_and_save_in_the_browser(app_url, sd1):
    from playwright.sync_api import sync_playwright

    url, models = app_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(http_credentials={"username": USER, "password": PASSWORD})
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


def test_xyz_plot_2x2_in_the_browser(webui, tmp_path):
    """A 2×2 plot (alpha × seed) run from the XYZ tab, on the WebUI double whose images come from the weights."""
    import threading

    import numpy as np
    import uvicorn
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from lib_merge.surfaces.standalone import create_app

    grids = tmp_path / "grids"
    webui.shared.opts.data["outdir_grids"] = str(grids)
    app, _ = create_app(workbench=webui.workbench)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.2)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#alloy_model_a")

            def choose(elem_id: str, value: str) -> None:
                page.locator(f"#{elem_id} input").first.click()
                page.locator(f"#{elem_id} li").filter(has_text=value).first.click()

            choose("alloy_model_a", webui.title("model_a"))
            choose("alloy_model_b", webui.title("model_b"))
            page.locator("#alloy_tab_xyz-button, button:has-text('XYZ plot')").first.click()
            page.locator("#alloy_xyz_x_values textarea, #alloy_xyz_x_values input").first.fill("0.2, 0.8")
            choose("alloy_xyz_y_type", "seed")
            page.locator("#alloy_xyz_y_values textarea, #alloy_xyz_y_values input").first.fill("1, 2")
            page.locator("#alloy_xyz_run").click()
            page.wait_for_function(
                "() => /XYZ plot: |Error/.test(document.querySelector('#alloy_xyz_status').innerText)",
                timeout=120_000,
            )
            status = page.locator("#alloy_xyz_status").first.inner_text()
            page.wait_for_selector("#alloy_xyz_gallery img", timeout=30_000)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert status.startswith("XYZ plot: 4/4 cells, 2 merges."), status
    saved = sorted(grids.glob("alloy_xyz-*.png"))
    assert [p.name for p in saved] == ["alloy_xyz-00001.png"]
    grid = np.asarray(Image.open(saved[0]).convert("RGB"))
    tile = 64  # the double draws width/8 × height/8 images; the defaults are 512 × 512
    left, top = grid.shape[1] - 2 * tile, grid.shape[0] - 2 * tile
    tiles = [
        grid[top + r * tile : top + (r + 1) * tile, left + c * tile : left + (c + 1) * tile]
        for r in (0, 1)
        for c in (0, 1)
    ]
    assert all(not np.array_equal(tiles[i], tiles[j]) for i in range(4) for j in range(i + 1, 4))


def test_lora_tab_bakes_and_merges_in_the_browser(app_url, sd1):
    from helpers import write_lora
    from playwright.sync_api import sync_playwright
    from test_lora_bake import reference_delta
    from test_lora_file import SD1_MODULES

    url, models = app_url
    (models / "Lora").mkdir()
    targets = write_lora(models / "Lora" / "style.safetensors", sd1[0], SD1_MODULES, rank=2, alpha=1)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(http_credentials={"username": USER, "password": PASSWORD})
        page.goto(url)
        page.locator("#alloy_tabs button:has-text('LoRA')").first.click()
        page.locator("#alloy_lora_lines textarea").fill("style:0.5")
        page.locator("#alloy_lora_model input").click()
        page.locator("#alloy_lora_model li").filter(has_text=sd1[0].name).first.click()
        page.locator("#alloy_lora_save_name textarea, #alloy_lora_save_name input").first.fill("baked_browser")
        page.locator("#alloy_lora_bake_save").click()
        status = "() => /Saved|Error/.test(document.querySelector('#alloy_lora_status').innerText)"
        page.wait_for_function(status, timeout=120_000)
        baked = page.locator("#alloy_lora_status").first.inner_text()
        page.locator("#alloy_lora_lines textarea").fill("style:1\nstyle:-0.5")
        page.get_by_text("Merge LoRAs into one", exact=True).click()
        page.locator("#alloy_lora_merge_name textarea, #alloy_lora_merge_name input").first.fill("twice")
        page.locator("#alloy_lora_merge").click()
        page.wait_for_function(
            "() => /Wrote|Error/.test(document.querySelector('#alloy_lora_status').innerText)", timeout=120_000
        )
        merged = page.locator("#alloy_lora_status").first.inner_text()
        browser.close()
    assert baked.startswith("Saved"), baked
    assert merged.startswith("Wrote twice.safetensors"), merged
    a, lora, out = load(sd1[0]), load(models / "Lora" / "style.safetensors"), load(models / "baked_browser.safetensors")
    for name, key in targets.items():
        expected = a[key].double() + 0.5 * reference_delta(lora, name, a[key].shape)
        assert torch.allclose(out[key].double(), expected, atol=2e-3, rtol=1e-3), key
    assert metadata(models / "Lora" / "twice.safetensors")["ss_network_dim"] == "4"


def open_app(p, url: str):
    """Chromium on the app, logged in, the page loaded."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    page = browser.new_page(http_credentials={"username": USER, "password": PASSWORD},
                            viewport={"width": 1400, "height": 1000})  # fmt: skip
    page.goto(url)
    page.wait_for_selector("#alloy_model_a")
    return browser, page


def choose(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f"#{elem_id} li").filter(has_text=value).first.click()


def wait_for_text(page, elem_id: str, pattern: str, timeout: int = 120_000) -> str:
    """The element's text once it matches the JavaScript regular expression `pattern`."""
    page.wait_for_function(f"() => /{pattern}/.test(document.querySelector('#{elem_id}').innerText)", timeout=timeout)
    return page.locator(f"#{elem_id}").first.inner_text()


def test_toolkit_tab_inspects_and_converts_in_the_browser(app_url, sd1, tmp_path):
    from playwright.sync_api import sync_playwright

    url, models = app_url
    with sync_playwright() as p:
        browser, page = open_app(p, url)
        page.locator("#alloy_tabs button:has-text('Toolkit')").first.click()
        choose(page, "alloy_tk_model", sd1[0].name)
        page.locator("#alloy_tk_inspect").click()
        inspected = wait_for_text(page, "alloy_tk_status", "Inspect: done|Error")
        report = page.locator("#alloy_tk_report textarea").input_value()
        page.locator("#alloy_tk_dtype label").filter(has_text="fp32").first.click()
        page.locator("#alloy_tk_name textarea, #alloy_tk_name input").first.fill("as_fp32")
        page.locator("#alloy_tk_convert").click()
        converted = wait_for_text(page, "alloy_tk_status", "Convert: done|Error")
        written = page.locator("#alloy_tk_report textarea").input_value()
        page.screenshot(path=str(tmp_path / "toolkit.png"), full_page=True)
        browser.close()
    assert inspected == "Inspect: done.", inspected
    assert "architecture: SD1 (sd1)" in report and "position_ids" in report, report
    assert converted == "Convert: done." and written.startswith(f"Wrote {models / 'as_fp32.safetensors'}"), written
    source, out = load(sd1[0]), load(models / "as_fp32.safetensors")
    assert set(out) == set(source)
    for key, tensor in source.items():
        if tensor.is_floating_point():
            assert out[key].dtype == torch.float32 and torch.equal(out[key], tensor.float()), key


@pytest.fixture
def recipe_app(tmp_path, sd1, request):
    """The app with a merge carrying its Alloy recipe in the models folder besides A and B."""
    from test_lora_merge_extract import run

    (tmp_path / "models").mkdir()
    out = tmp_path / "models" / "recipe_merge.safetensors"
    proc = run("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "weighted_sum", "--alpha", "0.3", "-o", out,
               "--no-history", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return request.getfixturevalue("app_url")


def test_analysis_tab_compares_and_loads_a_recipe_in_the_browser(recipe_app, sd1, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from lib_merge.analysis.similarity import compare

    url, _ = recipe_app
    with sync_playwright() as p:
        browser, page = open_app(p, url)
        page.locator("#alloy_tabs button:has-text('Analysis')").first.click()
        choose(page, "alloy_an_a", sd1[0].name)
        choose(page, "alloy_an_b", sd1[1].name)
        page.locator("#alloy_an_run").click()
        status = wait_for_text(page, "alloy_an_status", "keys compared|Error")
        table = wait_for_text(page, "alloy_an_table", "IN01", timeout=30_000)  # Gradio 4 draws the rows in view
        shown = {}
        for elem_id in ("alloy_an_heatmap", "alloy_an_chart"):
            page.wait_for_function(
                f"() => {{ const i = document.querySelector('#{elem_id} img'); return i && i.naturalWidth > 0; }}",
                timeout=30_000,
            )
            shown[elem_id] = page.evaluate(f"document.querySelector('#{elem_id} img').naturalWidth")
        page.locator("#alloy_an_table").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "analysis.png"), full_page=True)
        page.get_by_text("Metadata", exact=True).first.click()
        choose(page, "alloy_an_md_model", "recipe_merge")
        page.locator("#alloy_an_md_run").click()
        page.wait_for_function(
            "() => (document.querySelector('#alloy_an_md_recipe textarea').value || '').includes('weighted_sum(')",
            timeout=30_000,
        )
        recipe = page.locator("#alloy_an_md_recipe textarea").input_value()
        page.locator("#alloy_an_md_load").click()
        loaded = wait_for_text(page, "alloy_an_md_status", "Loaded|No recipe", timeout=30_000)
        page.locator("#alloy_tabs button:has-text('Merge')").first.click()
        in_merge_tab = page.locator("#alloy_recipe textarea").input_value()
        browser.close()
    assert f"{sd1[0].name} vs {sd1[1].name}:" in status and "keys compared" in status, status
    cells = table.split()
    base = next(b for b in compare(str(sd1[0]), str(sd1[1])).blocks if b.slot == "BASE")
    assert "IN00" in cells and abs(float(cells[cells.index("BASE") + 2]) - base.cosine_mean * 100) < 2e-3, table
    pictures = tmp_path / "home" / "analysis"
    stem = f"{sd1[0].stem}_vs_{sd1[1].stem}"
    assert shown == {"alloy_an_heatmap": Image.open(pictures / f"{stem}.png").width,
                     "alloy_an_chart": Image.open(pictures / f"{stem}-chart.png").width}  # fmt: skip
    assert "alpha=0.3" in recipe and loaded.startswith("Loaded into the Merge tab"), loaded
    assert in_merge_tab == recipe


def test_a_methods_own_controls_in_the_browser(app_url, sd1):
    """Choosing TIES shows TIES's parameters (its α starts at its own 1.0), hides DARE's, and merges with them."""
    from playwright.sync_api import sync_playwright

    url, models = app_url
    with sync_playwright() as p:
        browser, page = open_app(p, url)
        choose(page, "alloy_model_a", sd1[0].name)
        choose(page, "alloy_model_b", sd1[1].name)
        # The accordion's head: a button in Gradio 4, a div in 3.41.
        page.get_by_text("Modern and N-model methods (A is the base").first.click()
        assert not page.locator("#alloy_ties_density").is_visible()
        choose(page, "alloy_method", "ties")
        page.wait_for_selector("#alloy_ties_density", state="visible", timeout=30_000)
        assert not page.locator("#alloy_dare_p").is_visible()
        assert page.locator("#alloy_ties_alpha input[type=number]").input_value() == "1"
        page.locator("#alloy_ties_density input[type=number]").fill("0.3")
        page.locator("#alloy_ties_density input[type=number]").press("Enter")
        choose(page, "alloy_ties_sign", "count")
        page.locator("#alloy_save_name textarea, #alloy_save_name input").first.fill("ties_browser")
        page.locator("#alloy_merge").click()
        status = wait_for_text(page, "alloy_status", "Saved|Error")
        browser.close()
    assert status.startswith("Saved"), status
    recipe = metadata(models / "ties_browser.safetensors")["alloy_recipe"]
    assert 'ties(A, B, alpha=1.0, density=0.3, sign="count")' in recipe, recipe
