"""The XYZ plot and Dice tabs' callbacks, driven with widget values on the WebUI double."""

from __future__ import annotations

import json
import time

from helpers import table_rows
from test_ui import handler, last

from lib_merge.app.history import read_history
from lib_merge.app.plots.presets import all_presets
from lib_merge.paths import user_data_dir
from lib_merge.ui.app import build_ui


def choice_names(update) -> list[str]:
    """A dropdown update's choices (Gradio 4 gives (label, value) pairs, 3.x plain strings)."""
    return [c[1] if isinstance(c, (list, tuple)) else c for c in update["choices"]]


def form_values(demo, webui, elem_id, **changes):
    fn, inputs = handler(demo, elem_id)
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    defaults = {
        "alloy_model_a": webui.title("model_a"),
        "alloy_model_b": webui.title("model_b"),
        "alloy_gen_width": 256,
        "alloy_gen_height": 256,
        "alloy_gen_steps": 2,
    }
    for key, value in (defaults | changes).items():
        values[ids.index(key)] = value
    return fn, values


def test_run_reserve_queue_and_presets(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    demo = build_ui(webui.workbench)
    axes = {"alloy_xyz_x_values": "0.3, 0.6 | 0.9", "alloy_xyz_y_type": "seed", "alloy_xyz_y_values": "4"}
    run, values = form_values(demo, webui, "alloy_xyz_run", **axes)
    status, images, table = last(run(*values))
    assert status.startswith("XYZ plot: 2/2 cells, 2 merges.") and "1 more plots queued" in status, status
    assert len(images) == 1 and [row[2] for row in table_rows(table)] == ["waiting"]
    reserve, values = form_values(demo, webui, "alloy_xyz_reserve", **axes)
    status, table = reserve(*values)
    assert status == "Reserved 2 plot(s)." and len(table_rows(table)) == 3
    queue_file = tmp_path / "home" / "xyz_queue.json"
    assert [r["status"] for r in json.loads(queue_file.read_text())["rows"]] == ["waiting"] * 3
    bad, values = form_values(demo, webui, "alloy_xyz_reserve", alloy_xyz_x_values="0.1, what")
    status, _ = bad(*values)
    assert status == "**Error:** X alpha axis: 'what': not a number or a range like 0-1 (5) or 0-1 [0.25]"
    start, _ = handler(demo, "alloy_xyz_start_queue")
    status, _ = start()
    assert status == "Queue started in the background."
    deadline = time.time() + 60
    while any(r["status"] in ("waiting", "running") for r in json.loads(queue_file.read_text())["rows"]):
        assert time.time() < deadline
        time.sleep(0.2)
    rows = json.loads(queue_file.read_text())["rows"]
    assert [r["status"] for r in rows] == ["done"] * 3 and rows[0]["message"].startswith("XYZ plot: 1/1 cells")
    assert len(sorted((tmp_path / "grids").glob("alloy_xyz-*.png"))) == 4
    clear, _ = handler(demo, "alloy_xyz_clear")
    status, table = clear("-1")
    assert status == "Cleared 3 finished row(s)." and table_rows(table) == []
    # presets: save the axes by name, change them, load them back
    save, save_inputs = handler(demo, "alloy_xyz_preset_save")
    ids = [c.elem_id for c in save_inputs]
    assert ids[:2] == ["alloy_xyz_preset_name", "alloy_xyz_overwrite"]
    status, dropdown = save("sweep", False, "alpha", "0.1,0.2", "seed", "1,2", "none", "")
    shipped = list(all_presets(user_data_dir() / "no-user-file.json"))
    assert len(shipped) >= 4  # the shipped presets (presets/xyz_presets.json) are listed beside the user's
    assert status == "Saved preset 'sweep'." and choice_names(dropdown) == sorted([*shipped, "sweep"])
    status, _ = save("sweep", False, "beta", "0.1", "none", "", "none", "")
    assert "exists" in status
    load, _ = handler(demo, "alloy_xyz_preset_load")
    updates = load("sweep")
    assert [u["value"] for u in updates[:4]] == ["alpha", "0.1,0.2", "seed", "1,2"] and updates[-1].startswith("Loaded")
    outside = tmp_path / "xyzpresets.json"  # a server reads only the user-data and SuperMerger folders
    outside.write_text(json.dumps({"sm": {"xtype": "alpha", "xmen": "0.5", "ytype": "none"}}))
    importer, _ = handler(demo, "alloy_xyz_preset_import")
    refused, _ = importer(str(outside))
    assert "only a file named xyzpresets.json" in refused and refused == importer(str(tmp_path / "none.json"))[0]
    source = user_data_dir() / "xyzpresets.json"
    source.write_bytes(outside.read_bytes())
    status, dropdown = importer(str(source))
    assert status == "Imported 1 preset(s): sm." and choice_names(dropdown) == sorted([*shipped, "sm", "sweep"])


def test_dice_preview_run_records_seeds_and_elist(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    demo = build_ui(webui.workbench)
    dice = {"alloy_dice_seed": 21, "alloy_dice_rolls": 2, "alloy_dice_mode": "ER"}
    preview, values = form_values(demo, webui, "alloy_dice_preview", **dice)
    status, vectors = preview(*values)
    assert status == "Rolled with seed 21." and vectors.startswith("seed: 21\nalpha: 0.0,")
    assert "elemental: BASE::R, IN00::R" in vectors
    run, values = form_values(demo, webui, "alloy_dice_run", **dice)
    status, images, _, dice_status = last(run(*values))
    assert status.startswith("XYZ plot: 2/2 cells, 2 merges.") and dice_status == status
    rows = read_history(webui.workbench.history_path()).rows
    assert [r.settings["dice_seed"] for r in rows] == [21, 22]
    assert rows[-1].settings["elemental"].startswith("BASE::R, IN00::R") and rows[-1].settings["seed"] == 22
    elist, _ = handler(demo, "alloy_dice_elist")
    status = elist()
    path = tmp_path / "home" / "elists" / f"{rows[-1].id}.csv"
    assert status == f"Saved E-list {path}.", status
    lines = path.read_text().splitlines()
    assert lines[0] == '"key","slot","alpha","beta"' and len(lines) > 100
    alphas = {float(line.rsplit(",", 2)[1]) for line in lines[1:]}
    assert len(alphas) > 50 and all(0 <= a < 1 for a in alphas)  # every key drew its own R


def test_stop_ends_the_running_queued_plot(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    demo = build_ui(webui.workbench)
    reserve, values = form_values(demo, webui, "alloy_xyz_reserve", alloy_xyz_x_values="0-1 (12)")
    assert reserve(*values)[0] == "Reserved 1 plot(s)."
    queue_file = tmp_path / "home" / "xyz_queue.json"
    handler(demo, "alloy_xyz_start_queue")[0]()
    deadline = time.time() + 30
    while json.loads(queue_file.read_text())["rows"][0]["status"] != "running":
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    assert handler(demo, "alloy_xyz_stop")[0]() == "Stopping the queue and the plot after the current cell…"
    while json.loads(queue_file.read_text())["rows"][0]["status"] == "running":
        assert time.time() < deadline
        time.sleep(0.1)
    row = json.loads(queue_file.read_text())["rows"][0]
    assert row["status"] == "stopped" and "; stopped." in row["message"] and "/12 cells" in row["message"]
    assert not row["message"].startswith("XYZ plot: 12/12")
