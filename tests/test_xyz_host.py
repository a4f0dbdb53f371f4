"""XYZ plots on the WebUI double: real merges into the live model, images from its weights, grids on disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from lib_merge.app.history import read_history
from lib_merge.app.plots.plan import XYZPlan
from lib_merge.app.plots.runner import PlotControl, run_plot
from lib_merge.app.ports import GenSettings
from lib_merge.app.workbench import MergeRequest
from lib_merge.errors import PlanError
from lib_merge.recipe.form import MergeSettings

GEN = {"steps": 2, "width": 256, "height": 256, "batch_size": 1, "prompt": "a cat"}


def make_plan(webui, x, y=None, **extra) -> XYZPlan:
    data = {
        "x": {"type": x[0], "values": x[1]},
        "merge": {"a": webui.title("model_a"), "b": webui.title("model_b")},
        "gen": dict(GEN),
    }
    if y:
        data["y"] = {"type": y[0], "values": y[1]}
    return XYZPlan.from_dict(data | extra)


def test_plot_merges_once_per_alpha_and_matches_plain_merges(webui, tmp_path):
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    plan = make_plan(webui, ("seed", "1, 2"), ("alpha", "0.2, 0.8"))
    out = run_plot(webui.workbench, plan)
    assert out.merges == 2 and not out.stopped and len(out.results) == 4
    assert out.grid_paths == [str(tmp_path / "grids" / "alloy_xyz-00001.png")]
    grid = Image.open(out.grid_paths[0])
    assert "Alloy XYZ plan" in grid.info["parameters"]
    assert json.loads(grid.info["parameters"].split(": ", 1)[1])["x"]["type"] == "seed"
    assert grid.width > 2 * 32 and grid.height > 2 * 32  # the double draws width/8 × height/8 images
    assert len(read_history(webui.workbench.history_path()).rows) == 2
    # each cell's image equals a plain merge + generation of the same settings
    last = out.results[-1]
    assert last.cell.settings.alpha == 0.8 and last.cell.gen.seed == 2
    webui.workbench.restore()
    settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), alpha=0.2)
    webui.workbench.merge(MergeRequest(settings=settings))
    plain = webui.workbench.generate(webui.host.base_settings().overlay(GenSettings(**GEN, seed=2))).images[0]
    assert np.array_equal(np.asarray(plain), np.asarray(out.results[1].images[0]))
    assert not np.array_equal(np.asarray(out.results[1].images[0]), np.asarray(out.results[3].images[0]))


def test_checker_diffs_and_stop(webui, tmp_path):
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    merge = {"a": webui.title("model_a"), "b": webui.title("model_b"), "alpha": 1.0}
    options = {"save_csv": True, "save_models": True, "checker_gif": True}
    plan = make_plan(webui, ("elemental_checker", "IN01:, OUT11:"), merge=merge, options=options)
    out = run_plot(webui.workbench, plan)
    assert [r.cell.checker for r in out.results] == ["", "IN01:", "OUT11:"]
    assert set(out.diffs) == {"1,0,0", "2,0,0"} and all(0 < d <= 100 for d in out.diffs.values())
    rows = (tmp_path / "grids" / "alloy_xyz-00001.csv").read_text().splitlines()
    assert rows[0].startswith("cell,labels,recipe_hash") and len(rows) == 4
    checker = (tmp_path / "grids" / "alloy_xyz-00001.checker.csv").read_text().splitlines()
    assert checker[0] == "item,diff_percent" and [line.split(",")[0] for line in checker[1:]] == ["IN01:", "OUT11:"]
    gif = Image.open(tmp_path / "grids" / "alloy_xyz-00001.1-0-0.gif")
    assert gif.n_frames == 2
    saved = [r.output for r in read_history(webui.workbench.history_path()).rows]
    assert len(saved) == 3 and all(p.endswith(".safetensors") and os.path.isfile(p) for p in saved)
    control = PlotControl(webui.workbench)
    control.stop()  # stopped before the first cell: every tile is "stopped"
    stopped = run_plot(webui.workbench, make_plan(webui, ("alpha", "0.1, 0.2")), control)
    assert stopped.stopped and stopped.merges == 0 and all(r.status == "stopped" for r in stopped.results)


def test_dice_rolls_over_ten_wrap_into_rows_of_ten(webui, tmp_path):
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    plan = make_plan(webui, ("random", "12"), dice={"mode": "R", "seed": 3})
    out = run_plot(webui.workbench, plan)
    assert out.merges == 12 and [r.cell.dice_seed for r in out.results] == list(range(3, 15))
    tile = 32  # 256 / 8
    grid = out.grids[0]
    left, top = grid.width - 10 * tile, grid.height - 2 * tile
    assert left > 0 and top > 0 and grid.height < top + 3 * tile
    pixels = np.asarray(grid)
    assert (pixels[top + tile :, left + 2 * tile :] == 255).all()  # roll 13-20 positions stay blank
    assert not (pixels[top + tile :, left : left + 2 * tile] == 255).all()  # rolls 11 and 12


def test_merge_id_and_recipe_axes_run_whole_recipes(webui, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), alpha=0.4)
    first = webui.workbench.merge(MergeRequest(settings=settings))
    recipes = tmp_path / "home" / "recipes"
    recipes.mkdir(parents=True)
    (recipes / "mine.alloy").write_text(first.recipe_text.replace("alpha=0.4", "alpha=0.9"))
    webui.workbench.restore()
    plan = XYZPlan.from_dict({"x": {"type": "merge_id", "values": "-1"}, "y": {"type": "seed", "values": "3, 4"},
                              "recipe": first.recipe_text, "gen": dict(GEN)})  # fmt: skip
    out = run_plot(webui.workbench, plan)
    assert out.merges == 1 and out.results[0].merge.recipe_hash == first.recipe_hash
    plan = XYZPlan.from_dict({"x": {"type": "recipe", "values": "mine.alloy"}, "recipe": first.recipe_text,
                              "gen": dict(GEN)})  # fmt: skip
    out = run_plot(webui.workbench, plan)
    assert out.merges == 1 and "alpha=0.9" in webui.workbench.live.recipe_text
    (tmp_path / "home" / "outside.alloy").write_text(first.recipe_text)  # beside the recipes folder, not in it
    for name in ("../outside.alloy", str(tmp_path / "home" / "outside.alloy"), "missing.alloy"):
        plan = XYZPlan.from_dict({"x": {"type": "recipe", "values": name}, "recipe": first.recipe_text,
                                  "gen": dict(GEN)})  # fmt: skip
        with pytest.raises(PlanError, match="recipe axis: .*(not a path|only a file can be read here)"):
            run_plot(webui.workbench, plan)


def test_prompt_batch_generates_every_prompt_in_one_batch(webui, tmp_path):
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    calls = []
    generate = webui.workbench.generate
    webui.workbench.generate = lambda gen: calls.append(gen) or generate(gen)
    plan = make_plan(webui, ("prompt_batch", "a cat\n\na dog\n\na cow"), ("alpha", "0.2, 0.8"))
    out = run_plot(webui.workbench, plan)
    assert out.merges == 2 and len(calls) == 2
    assert calls[0].prompt == ["a cat", "a dog", "a cow"] and calls[0].batch_size == 3
    images = [np.asarray(r.images[0]) for r in out.results]
    assert len({im.tobytes() for im in images}) == 6 and all(len(r.images) == 1 for r in out.results)
    # the last cells are the alpha 0.8 row: the same as one batch of the three prompts on that merge
    again = generate(calls[1]).images
    assert all(np.array_equal(np.asarray(again[i]), images[3 + i]) for i in range(3))


def test_one_plot_at_a_time_swap_restore_and_single_images(webui, tmp_path):
    import threading
    import time

    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    plan = make_plan(webui, ("alpha", "0.2, 0.4, 0.6"), ("seed", "1, 2"), options={"swap_xy": True})
    box = {}
    webui.workbench.plot_lock.acquire()  # another plot is running
    thread = threading.Thread(target=lambda: box.update(out=run_plot(webui.workbench, plan)))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and webui.workbench.live is None  # it waits: nothing merged yet
    webui.workbench.plot_lock.release()
    thread.join(60)
    grid = box["out"].grids[0]
    tile = 32
    # swapped: X (3 alphas) runs down, Y (2 seeds) across
    left, top = grid.width - 2 * tile, grid.height - 3 * tile
    assert left > 0 and top > 0 and grid.width < left + 3 * tile
    pixels = np.asarray(grid)
    first = np.asarray(box["out"].results[1].images[0])  # alpha 0.4, seed 1: row 1, column 0 when swapped
    assert np.array_equal(pixels[top + tile : top + 2 * tile, left : left + tile], first)
    single = make_plan(webui, ("alpha", "0.0, 0.5"), options={"no_grid": True, "restore_after": True})
    out = run_plot(webui.workbench, single)
    assert out.grids == [] and out.grid_paths == [] and len(out.singles()) == 2
    assert webui.workbench.live is None  # restored: model A again


def test_checker_on_y_labels_its_rows_with_the_diff(webui, tmp_path):
    from lib_merge.app.plots.runner import _label

    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    merge = {"a": webui.title("model_a"), "b": webui.title("model_b"), "alpha": 1.0}
    plan = make_plan(webui, ("seed", "1"), ("elemental_checker", "OUT11:"), merge=merge)
    out = run_plot(webui.workbench, plan)
    row = next(r for r in out.results if r.cell.y == 1)
    assert set(out.diffs) == {"0,1,0"}
    assert _label(row, 1, out.diffs) == f"OUT11:\nDiff: {out.diffs['0,1,0']:.2f}%"
