"""XYZ plots: axis parsers, plan expansion, the no-re-merge rule, grids, the queue and presets."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from lib_merge.app.plots.axes import AXIS_TYPES, parse_axis
from lib_merge.app.plots.executor import MergedCell, run_cells
from lib_merge.app.plots.grid import GridLabels, draw_grid, pixel_diff_percent
from lib_merge.app.plots.plan import PlanContext, XYZPlan, expand, split_plan
from lib_merge.app.plots.presets import get_preset, import_supermerger_presets, save_preset
from lib_merge.app.plots.queue import ReservationQueue
from lib_merge.app.ports import GenResult
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import ParameterError, PlanError

SD1 = SCHEMAS["sd1"]
MODELS = {"a": "a.safetensors", "b": "b.safetensors"}
VALID = {
    "alpha": ("0.1, 0.3,0.5, 0-1 (3), 0-0.5 [0.25]", [0.1, 0.3, 0.5, 0.0, 0.5, 1.0, 0.0, 0.25, 0.5]),
    "beta": ("0.2,1e-1", [0.2, 0.1]),
    "alpha_beta": ("0, 0.5 0.1, 0.3 0.4", [(0.0, 0.0), (0.5, 0.1), (0.3, 0.4)]),
    "seed": ("1, -1, 42", [1, -1, 42]),
    "mbw_alpha": ("GRAD_V\nIN00-IN11=0.2 *=1", ["GRAD_V", "IN00-IN11=0.2 *=1"]),
    "mbw_beta": (",".join(["0.5"] * 26), [",".join(["0.5"] * 26)]),
    "mbw_alpha_beta": ("*=0.1\n*=0.2", [("*=0.1", "*=0.2")]),
    "model_a": ("x.safetensors, y", ["x.safetensors", "y"]),
    "model_b": ("x", ["x"]),
    "model_c": ("x", ["x"]),
    "pinpoint_blocks": ("IN00 IN02-IN03, NOT BASE IN*", [("IN00", "IN02", "IN03"), ("M00",) + SD1.slots[14:]]),
    "include": ("IN00 VAE, NOT OUT*", ["IN00 VAE", " ".join(SD1.slots[:14]) + " VAE Adjust"]),
    "exclude": ("Adjust", ["Adjust"]),
    "add_include": ("M00", ["M00"]),
    "add_exclude": ("BASE", ["BASE"]),
    "elemental": ("\n\nIN01:attn1:0.2\n\nOUT03::1", ["", "IN01:attn1:0.2", "OUT03::1"]),
    "add_elemental": ("IN01::0", ["IN01::0"]),
    "pinpoint_element": ("IN01:attn1, OUT02:NOT norm", ["IN01:attn1", "OUT02:NOT norm"]),
    "elemental_checker": ("IN01:attn", ["IN01:attn"]),
    "adjust": ("1,0,0,0,0,0,0,0\n0,0,0,0,0.1,0,0,0", ["1,0,0,0,0,0,0,0", "0,0,0,0,0.1,0,0,0"]),
    "pinpoint_adjust": ("IN, CONT BRI, ALL", [("IN",), ("CONT", "BRI"), tuple("IN OUT OUT2 CONT BRI COL1 COL2 COL3".split())]),  # noqa: E501
    "calcmode": ("normal, cosineA", ["normal", "cosineA"]),
    "rebasin": ("off, ON, 1", [False, True, True]),
    "prompt": ("a cat\na dog", ["a cat", "a dog"]),
    "prompt_multiline": ("a cat\nin a hat\n\na dog", ["a cat\nin a hat", "a dog"]),
    "prompt_batch": ("a\n\nb", ["a", "b"]),
    "random": ("3", [0, 1, 2]),
    "merge_id": ("-1, 4", [-1, 4]),
    "recipe": ("one.txt", ["one.txt"]),
}  # fmt: skip
INVALID = {
    "alpha": ("0.1, abc", "'abc'"),
    "beta": ("1-0 [0]", "step"),
    "alpha_beta": ("1 2 3", "'1 2 3'"),
    "seed": ("1.5", "'1.5'"),
    "mbw_alpha": ("1,2,3", "3 values"),
    "mbw_beta": ("IN99=1", "IN99"),
    "mbw_alpha_beta": ("*=0.1", "pairs"),
    "pinpoint_blocks": ("IN00 XX7", "XX7"),
    "include": ("NOPE", "NOPE"),
    "exclude": ("IN12", "IN12"),
    "add_include": ("OUT12", "OUT12"),
    "add_exclude": ("M01", "M01"),
    "elemental": ("IN01:attn", "Blocks:Elements:Ratio"),
    "add_elemental": ("IN01::x", "'x'"),
    "pinpoint_element": ("IN01:attn:0.3", "Blocks:Elements"),
    "elemental_checker": ("IN01", "Blocks:Elements"),
    "adjust": ("1,2,3,4,5,6,7,8,9", "8 numbers"),
    "pinpoint_adjust": ("GAMMA", "GAMMA"),
    "calcmode": ("cosineC", "cosineC"),
    "rebasin": ("maybe", "give on or off"),
    "random": ("0", "positive"),
    "merge_id": ("last", "'last'"),
    "recipe": ("../x.txt", "not a path"),
}


def test_every_axis_type_has_valid_and_invalid_cases():
    assert set(VALID) == set(AXIS_TYPES)
    assert set(INVALID) == set(AXIS_TYPES) - {
        "model_a",
        "model_b",
        "model_c",
        "prompt",
        "prompt_multiline",
        "prompt_batch",
    }  # fmt: skip  (free text)


@pytest.mark.parametrize("type_id", sorted(VALID))
def test_axis_parser_values(type_id):
    text, expected = VALID[type_id]
    values = [v.value for v in parse_axis(type_id, text, SD1)]
    if type_id in ("alpha", "beta"):
        assert values == pytest.approx(expected)
    else:
        assert values == expected


@pytest.mark.parametrize("type_id", sorted(INVALID))
def test_axis_parser_names_the_axis_and_item(type_id):
    text, fragment = INVALID[type_id]
    with pytest.raises(PlanError) as caught:
        parse_axis(type_id, text, SD1)
    message = str(caught.value)
    assert message.startswith(AXIS_TYPES[type_id].label) and fragment in message, message


def plan(x, y=None, z=None, **kw) -> XYZPlan:
    axes = {"x": {"type": x[0], "values": x[1]}}
    if y:
        axes["y"] = {"type": y[0], "values": y[1]}
    if z:
        axes["z"] = {"type": z[0], "values": z[1]}
    return XYZPlan.from_dict(axes | {"merge": kw.pop("merge", dict(MODELS))} | kw)


def test_expansion_count_and_order_z_outer():
    cells = expand(plan(("alpha", "0.1,0.2,0.3"), ("seed", "5,6"), ("prompt", "p\nq")), PlanContext(SD1))
    assert len(cells) == 12
    assert [(c.z, c.y, c.x) for c in cells] == [(z, y, x) for z in range(2) for y in range(2) for x in range(3)]
    assert [c.settings.alpha for c in cells[:3]] == [0.1, 0.2, 0.3]
    assert {c.gen.seed for c in cells[3:6]} == {6} and {c.gen.prompt for c in cells[6:]} == {"q"}
    assert len({c.merge_key for c in cells}) == 3  # seed and prompt do not change the recipe


def test_seed_minus_one_is_drawn_once_per_plot_and_shared_by_split_plans():
    p = plan(("alpha", "0.1,0.2|0.3"), ("seed", "-1, 3"))
    parts = split_plan(p)
    assert [part.x.values for part in parts] == ["0.1,0.2", "0.3"]
    seeds = [[c.gen.seed for c in expand(part, PlanContext(SD1))] for part in parts]
    drawn = seeds[0][0]
    assert seeds == [[drawn, drawn, 3, 3], [drawn, 3]]


@pytest.mark.parametrize(
    "axes, message",
    [
        ((("alpha", ""),), "X axis has no values"),
        ((("alpha", "0.1"), ("alpha", "0.2")), "on two axes"),
        ((("beta", "0.1"),), "beta axis needs Triple sum, Sum twice, extract, tensor"),
        ((("pinpoint_blocks", "IN00"), ("seed", "1")), "needs an axis of alpha or beta or alpha and beta"),
        ((("pinpoint_adjust", "IN"),), "needs an axis of alpha"),
        ((("calcmode", "normal, trainDifference"),), "trainDifference needs mode Add difference"),
        ((("merge_id", "1"), ("alpha", "0.1")), "replaces the whole recipe"),
        ((("alpha", "0.1, 2-3 (2)"), ("mbw_alpha", "*=0.2\nIN00=1 IN99=2")), "Y mbw alpha axis: 'IN00=1 IN99=2'"),
    ],
)
def test_plan_errors_come_before_any_work(axes, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(plan(*axes), PlanContext(SD1))


def test_missing_models_and_missing_c_are_plan_errors():
    with pytest.raises(PlanError, match="models A and B"):
        expand(plan(("alpha", "0.1"), merge={"a": "a"}), PlanContext(SD1))
    with pytest.raises(PlanError, match="add model C"):
        expand(plan(("alpha", "0.1"), merge=dict(MODELS, mode="add_difference")), PlanContext(SD1))


def test_pinpoint_and_adjust_axes_place_the_alpha_value():
    cells = expand(plan(("alpha", "0.9"), ("pinpoint_blocks", "IN01 OUT11")), PlanContext(SD1))
    values = [float(v) for v in cells[0].settings.blocks.split(",")]
    assert values[SD1.index("IN01")] == 0.9 and values[SD1.index("OUT11")] == 0.9
    assert values.count(0.5) == 24  # the rest keep the base alpha
    cells = expand(plan(("alpha", "0.3"), ("pinpoint_adjust", "BRI")), PlanContext(SD1))
    assert cells[0].settings.adjust == "0.0,0.0,0.0,0.0,0.3,0.0,0.0,0.0" and cells[0].settings.alpha is None
    cells = expand(plan(("alpha", "0.7"), ("pinpoint_element", "IN01:attn")), PlanContext(SD1))
    assert cells[0].settings.elemental == "IN01:attn:0.7"


class CountingHost:
    """A fake plot host: counts merges; an image is a pure function of (recipe, seed, prompt)."""

    def __init__(self):
        self.merged: list[str] = []
        self.live: str | None = None

    def merge(self, cell):
        digest = str(abs(hash(cell.merge_key)))
        if digest == self.live:
            return MergedCell("m", digest, len(self.merged), fresh=False)
        self.merged.append(cell.merge_key)
        self.live = digest
        return MergedCell("m", self.live, len(self.merged))

    def generate(self, gen):
        value = abs(hash((self.live, gen.seed, gen.prompt))) % 255
        return GenResult([Image.new("RGB", (16, 16), (value, 0, 0))], f"Seed: {gen.seed}")


@pytest.mark.parametrize("order", ["seed on X", "seed on Y"])
def test_generation_only_axes_never_re_merge(order):
    alpha, seed = ("alpha", "0.1,0.2,0.3"), ("seed", "1,2,3,4")
    p = plan(seed, alpha) if order == "seed on X" else plan(alpha, seed)
    host = CountingHost()
    result = run_cells(expand(p, PlanContext(SD1)), host, threading.Event())
    assert result.merges == 3 == len(host.merged) and not result.stopped
    assert all(r.status == "done" and len(r.images) == 1 for r in result.cells)
    # the same recipe as the live model is not merged again
    again = run_cells(expand(plan(("seed", "7,8"), merge=dict(MODELS, alpha=0.3)), PlanContext(SD1)), host,
                      threading.Event())  # fmt: skip
    assert again.merges == 0 and len(host.merged) == 3


def test_stop_between_cells_leaves_stopped_tiles():
    host = CountingHost()
    stop = threading.Event()
    generate = host.generate

    def generate_then_stop(gen):
        stop.set()
        return generate(gen)

    host.generate = generate_then_stop
    result = run_cells(expand(plan(("alpha", "0.1,0.2")), PlanContext(SD1)), host, stop)
    assert [r.status for r in result.cells] == ["done", "stopped"] and result.stopped and result.merges == 1


def test_grid_geometry_labels_and_tiles():
    w, h = 64, 48
    tiles = [[Image.new("RGB", (w, h), (10 * (r * 3 + c), 200, 30)) for c in range(3)] for r in range(2)]
    tiles[1][2] = None
    labels = GridLabels(["alpha: 0.1", "0.2", "IN00-IN11=0.2 OUT00-OUT11=1 M00=0.5"], ["seed: 1", "2"], "A·(1−X) + B·X")
    grid = draw_grid(tiles, labels)
    left, top = grid.width - 3 * w, grid.height - 2 * h
    assert left > 0 and top > 0
    pixels = np.asarray(grid)
    for r in range(2):
        for c in range(3):
            block = pixels[top + r * h : top + (r + 1) * h, left + c * w : left + (c + 1) * w]
            if tiles[r][c] is None:
                assert (block == (200, 200, 200)).all(axis=-1).mean() > 0.8  # grey, with "stopped" written on it
                assert (block < 100).any()
            else:
                assert (block == np.asarray(tiles[r][c])).all()
    for c in range(3):  # every column has its label drawn above it
        assert (pixels[:top, left + c * w : left + (c + 1) * w] < 128).any()
    for r in range(2):
        assert (pixels[top + r * h : top + (r + 1) * h, :left] < 128).any()
    assert (pixels[:top, :left] < 128).any()  # the formula in the corner


def test_pixel_diff_percent_counts_pixels_over_20():
    base = Image.new("RGB", (10, 10), (100, 100, 100))
    other = np.asarray(base).copy()
    other[0, :5] = (121, 100, 100)  # 5 pixels over the threshold
    other[1, :5] = (120, 100, 100)  # 5 pixels at it: not counted
    assert pixel_diff_percent(Image.fromarray(other), base) == pytest.approx(5.0)


def test_queue_survives_a_restart_and_a_failing_plot_does_not_stop_it(tmp_path):
    path = tmp_path / "xyz_queue.json"
    queue = ReservationQueue(path)
    for label in ("one", "bad", "three"):
        queue.add({"label": label}, label)
    queue.rows[2].status = "running"  # as if the WebUI died while it ran
    queue._save()
    queue = ReservationQueue(path)  # the restart
    assert [r.status for r in queue.rows] == ["waiting", "waiting", "interrupted"]
    queue.retry(3)
    ran = []

    def run(p):
        ran.append(p["label"])
        if p["label"] == "bad":
            raise PlanError("X alpha axis: 'x': not a number")
        return "ok"

    assert queue.start(run)
    queue.join(10)
    assert ran == ["one", "bad", "three"]
    reloaded = ReservationQueue(path)
    assert [(r.status, r.message) for r in reloaded.rows] == [
        ("done", "ok"), ("error", "X alpha axis: 'x': not a number"), ("done", "ok")]  # fmt: skip
    reloaded.move(3, -2)
    assert [r.id for r in reloaded.rows] == [3, 1, 2]
    assert reloaded.delete(-1) == 1 and reloaded.clear_finished() == 2 and reloaded.rows == []
    with pytest.raises(ParameterError, match="no queued plot with id 9"):
        reloaded.retry(9)
    assert json.loads(path.read_text())["rows"] == []


def test_presets_save_load_overwrite_and_supermerger_import(tmp_path):
    path = tmp_path / "xyz_presets.json"
    axes = {"x": {"type": "alpha", "values": "0.1,0.2"}, "y": {"type": "seed", "values": "1"}}
    save_preset(path, "sweep", axes)
    assert get_preset(path, "sweep") == axes
    with pytest.raises(ParameterError, match="exists"):
        save_preset(path, "sweep", axes)
    save_preset(path, "sweep", {"x": {"type": "beta", "values": "0.3"}}, overwrite=True)
    assert get_preset(path, "sweep")["x"]["type"] == "beta"
    source = tmp_path / "xyzpresets.json"
    source.write_text(json.dumps({"sm": {"xtype": "mbw alpha", "xmen": "GRAD_V", "ytype": "none", "ymen": ""}}))
    assert import_supermerger_presets(source, path) == ["sm"]
    assert get_preset(path, "sm") == {"x": {"type": "mbw_alpha", "values": "GRAD_V"}}


def test_cli_dry_run_prints_the_cells(tmp_path, capsys):
    from lib_merge.surfaces.cli import main

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"x": {"type": "alpha", "values": "0.2,0.5|0.8"}, "y": {"type": "seed", "values": "1,2"},
                                "merge": MODELS}))  # fmt: skip
    assert main(["xyz", str(path), "--host", "none"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "plot 1/2" and lines[1] == "cell 1/4  x=0.2  y=1  seed=1  merge 1/2"
    assert lines[4] == "cell 4/4  x=0.5  y=2  seed=2  merge 2/2" and lines[-1] == "6 cells, 3 merges, schema sd1"
    path.write_text(json.dumps({"x": {"type": "mbw_alpha", "values": "1,2"}, "merge": MODELS}))
    assert main(["xyz", str(path), "--host", "none"]) == 3
    assert "X mbw alpha axis: '1,2'" in capsys.readouterr().err


def test_named_vectors_keep_the_alpha_of_the_unnamed_blocks():
    """`IN00-IN11=0` under alpha 0.2 and 0.5 are two merges (the scalar fills the other blocks)."""
    p = plan(("alpha", "0.2, 0.5"), ("mbw_alpha", "IN00-IN11=0\nGRAD_V"))
    cells = expand(p, PlanContext(SD1))
    assert cells[0].merge_key != cells[1].merge_key and "*=0.2" in cells[0].merge_key
    assert cells[2].merge_key == cells[3].merge_key  # a whole preset leaves nothing to the scalar


def test_alpha_zero_cells_are_model_a_and_reuse_one_image():
    """Every α = 0 (scalar or vector) is model A: one merge, one generation per seed."""
    p = plan(("alpha", "0, 0.5"), ("mbw_alpha", "*=0\nIN00=0.3"))
    cells = expand(p, PlanContext(SD1))
    assert cells[0].merge_key == cells[1].merge_key == "model A unchanged: a.safetensors"  # "*=0": 0.5 unused
    assert len({cells[1].merge_key, cells[2].merge_key, cells[3].merge_key}) == 3
    host = CountingHost()
    generated = []
    generate = host.generate
    host.generate = lambda gen: generated.append(gen.seed) or generate(gen)
    result = run_cells(cells, host, threading.Event())
    assert result.merges == 3 and len(generated) == 3
    assert result.cells[0].images == result.cells[1].images != result.cells[2].images


def _readme_plan() -> dict:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"\n(    \{\"x\".*?\n)\n", readme, re.S).group(1)
    return json.loads(block)


def test_the_readme_plan_has_no_idle_axis_and_a_vector_that_sets_every_block_is_warned_about(tmp_path, capsys):
    from lib_merge.surfaces.cli import main

    plan = _readme_plan()
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert main(["xyz", str(path), "--host", "none"]) == 0
    out, err = capsys.readouterr()
    assert "has no effect" not in err and out.strip().endswith("12 cells, 6 merges, schema sd1")
    plan["z"]["values"] = "GRAD_V\nIN00-IN11=0 *=1"  # every block set: the alpha axis does nothing
    path.write_text(json.dumps(plan))
    assert main(["xyz", str(path), "--host", "none"]) == 0
    out, err = capsys.readouterr()
    assert "warning: X axis alpha has no effect" in err
    assert out.strip().endswith("12 cells, 2 merges, schema sd1")
