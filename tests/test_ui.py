"""The Gradio tabs: built on the installed Gradio (CI runs this file on 3.41.2 and on 4.x), and their
callbacks driven with widget values exactly as Gradio hands them over."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from helpers import table_rows

from lib_merge.app.history import RowDraft, append_history
from lib_merge.app.workbench import Workbench
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import BlockVectorError, ParameterError
from lib_merge.host.folder import FolderHost
from lib_merge.ui.app import TAB_LABELS, build_ui
from lib_merge.ui.values import merge_request, restore_values, vector_values

GEN_IDS = {
    "txt2img_prompt": "a cat",
    "txt2img_steps": 3,
    "txt2img_sampling": "Euler",
    "txt2img_seed": 42,
    "txt2img_width": 64,
    "txt2img_height": 64,
    "txt2img_batch_size": 2,
    "txt2img_batch_count": 1,
    "txt2img_cfg_scale": 7.0,
}


def labels(demo) -> list[str]:
    return [b.label for b in demo.blocks.values() if type(b).__name__ in ("Tab", "TabItem")]


def by_elem_id(demo, elem_id):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def handlers(demo, elem_id, outside=()):
    """The functions Gradio runs when the element with this elem_id is clicked, with their inputs
    (`outside`: components of other Blocks, as the WebUI's txt2img tab is)."""
    block = by_elem_id(demo, elem_id)
    known = dict(demo.blocks) | {c._id: c for c in outside}
    if isinstance(demo.fns, dict):  # Gradio 4: BlockFunction objects carry targets and inputs
        for fn in demo.fns.values():
            if block._id in [t[0] for t in fn.targets]:
                yield fn.fn, list(fn.inputs)
    else:  # Gradio 3: dependencies (dicts of ids) beside a list of functions
        for index, dep in enumerate(demo.dependencies):
            if block._id in [t[0] if isinstance(t, (list, tuple)) else t for t in dep["targets"]]:
                yield demo.fns[index].fn, [known[i] for i in dep["inputs"]]


def handler(demo, elem_id, outside=()):
    for found in handlers(demo, elem_id, outside):
        return found
    raise AssertionError(f"nothing wired to {elem_id}")


def last(gen_or_value):
    """The final output of a callback (generators yield progress first)."""
    if hasattr(gen_or_value, "__next__"):
        return list(gen_or_value)[-1]
    return gen_or_value


def test_standalone_tabs_build_and_merge_writes_a_file(tmp_path, sd1):
    import shutil

    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    assert labels(demo) == list(TAB_LABELS)
    assert not by_elem_id(demo, "alloy_gen").visible and not by_elem_id(demo, "alloy_restore").visible
    fn, inputs = handler(demo, "alloy_merge")
    values = [c.value for c in inputs]
    ids = [c.elem_id for c in inputs]
    values[ids.index("alloy_model_a")] = sd1[0].name
    values[ids.index("alloy_model_b")] = sd1[1].name
    values[ids.index("alloy_save_name")] = "from_ui"
    status, recipe, _ = last(fn(*values))
    assert status.startswith("Saved") and (tmp_path / "from_ui.safetensors").is_file()
    assert "weighted_sum(A, B, alpha=0.5)" in recipe


def test_webui_tabs_read_txt2img_components_and_generate(webui):
    with gr.Blocks():  # the txt2img tab, built by the WebUI before Alloy's tab
        for elem_id, value in GEN_IDS.items():
            webui.host.components[elem_id] = gr.Textbox(value=str(value), elem_id=elem_id)
    demo = build_ui(webui.workbench)
    assert labels(demo) == list(TAB_LABELS)
    fn, inputs = handler(demo, "alloy_gen", webui.host.components.values())
    by_id = {c.elem_id: c for c in inputs}
    assert set(GEN_IDS) <= set(by_id)  # the Gen button takes the txt2img tab's own components
    values = [GEN_IDS.get(c.elem_id, c.value) for c in inputs]
    status, images, infotext = last(fn(*values))
    assert len(images) == 2 and "Steps: 3" in infotext and "Seed: 42" in infotext, status
    assert "not found" in status  # the double has no hires-fix components: the fallback is announced
    # Merge & Gen: the merge, then an image from the merged weights
    merge_gen, mg_inputs = handler(demo, "alloy_merge_gen", webui.host.components.values())
    mg_values = [GEN_IDS.get(c.elem_id, c.value) for c in mg_inputs]
    ids = [c.elem_id for c in mg_inputs]
    mg_values[ids.index("alloy_model_a")] = webui.title("model_a")
    mg_values[ids.index("alloy_model_b")] = webui.title("model_b")
    status, _, _, merged_images, merged_info = last(merge_gen(*mg_values))
    assert status.startswith("Merged") and "Alloy history: 1" in merged_info
    assert not np.array_equal(np.asarray(merged_images[0]), np.asarray(images[0]))
    # an Alloy override wins over the txt2img value
    values[[c.elem_id for c in inputs].index("alloy_gen_seed")] = "5"
    _, _, infotext = last(fn(*values))
    assert "Seed: 5" in infotext


def test_merge_button_patches_and_history_restores_the_widgets(webui):
    demo = build_ui(webui.workbench)
    fn, inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    values[ids.index("alloy_model_a")] = webui.title("model_a")
    values[ids.index("alloy_model_b")] = webui.title("model_b")
    values[ids.index("alloy_use_mbw")] = True
    values[ids.index("alloy_sd1_OUT05")] = 0.9
    status, recipe, footer = last(fn(*values))
    assert status.startswith("Merged"), status
    assert "blocks(" in recipe and "OUT05=0.9" in recipe and "history 1" in footer
    load, load_inputs = handler(demo, "alloy_history_load")
    updates = load(-1)
    restored = dict(zip(ids, [u.get("value") if isinstance(u, dict) else None for u in updates[:-1]], strict=True))
    assert restored["alloy_model_a"] == webui.title("model_a") and restored["alloy_use_mbw"] is True
    assert restored["alloy_sd1_OUT05"] == 0.9 and restored["alloy_sd1_OUT04"] == 0.5
    assert "Loaded the settings of history id 1" in updates[-1]
    search, _ = handler(demo, "alloy_history_search")
    rows, note = search("OUT05", "and", "50")
    assert [r[0] for r in table_rows(rows)] == [1] and note.startswith("1 of 1")
    restore, _ = handler(demo, "alloy_restore")
    status, footer = restore()
    assert status.startswith("Restored") and "Loaded: the selected checkpoint" in footer, footer  # not the merge


def test_a_fresh_page_starts_model_a_at_the_loaded_checkpoint(webui):
    """The WebUI would bring back the Model A value stored in ui-config.json, and Forge's checkpoint selector
    has no elem_id to follow: the page load sets Model A to the loaded checkpoint (a merge's model A)."""
    from test_tabs import _load_functions

    demo = build_ui(webui.workbench)
    model_a = by_elem_id(demo, "alloy_model_a")
    loads = [(fn, outputs) for fn, outputs in _load_functions(demo) if outputs == [model_a._id]]
    assert len(loads) == 1
    webui.sd_models.reload_model_weights(info=webui.sd_models.checkpoints_list[webui.title("model_b")])
    assert loads[0][0]()["value"] == webui.title("model_b")


def test_errors_are_shown_not_raised(webui):
    demo = build_ui(webui.workbench)
    fn, inputs = handler(demo, "alloy_merge")
    values = [c.value for c in inputs]
    status, *_ = last(fn(*values))
    assert status == "**Error:** choose models A and B"
    load, _ = handler(demo, "alloy_history_load")
    assert load(0)[-1] == "**Error:** no history row with id 0"


def test_merge_request_from_widget_values():
    sd1 = [0.5] * 26
    values = {
        "model_a": "a",
        "model_b": "b",
        "model_c": "c",
        "mode": "weighted_sum",
        "alpha": 0.3,
        "beta": 0.2,
        "use_mbw": False,
        "mbw_arch": "SD1/SD2 (26)",
        "mbw_sd1": sd1,
        "mbw_sdxl": [0.1] * 20,
    }
    request = merge_request(values)
    assert request.settings.c is None and request.settings.beta is None and request.settings.blocks is None
    assert request.save is None
    request = merge_request(dict(values, mode="sum_twice", use_mbw=True, mbw_arch="SDXL (20)", save_after=True))
    assert request.settings.c == "c" and request.settings.beta == 0.2
    assert request.settings.blocks == ",".join(["0.1"] * 20) and request.save.dtype == "fp16"
    with pytest.raises(ParameterError, match="models A and B"):
        merge_request(dict(values, model_b=None))
    assert merge_request(dict(values, use_recipe=True, recipe="alloy-recipe 1\n")).recipe.startswith("alloy")


def test_vector_text_and_presets_fill_sliders():
    values = vector_values("IN00-IN02=0.2 OUT*=1 *=0.5", "sd1")
    slots = SCHEMAS["sd1"].slots
    assert values[slots.index("IN01")] == 0.2 and values[slots.index("OUT11")] == 1 and values[0] == 0.5
    assert len(vector_values("GRAD_V", "sdxl")) == len(SCHEMAS["sdxl"].slots)
    with pytest.raises(BlockVectorError):
        vector_values("1,2,3", "sd1")
    with pytest.raises(BlockVectorError, match="extended SDXL does not fit the 20 sliders"):
        vector_values(",".join(["0.5"] * 110), "sdxl")
    fine = vector_values("IN41=0.9 MID107=0.1 VAE=0.3 *=0.5", "sdxl_ext")
    names = SCHEMAS["sdxl_ext"].names_with_vae()
    assert len(fine) == 110 and fine[names.index("IN41")] == 0.9 and fine[names.index("MID107")] == 0.1
    assert fine[-1] == 0.3 and fine[names.index("IN410")] == 0.5
    with pytest.raises(BlockVectorError, match="SDXL does not fit the 110 sliders of extended SDXL"):
        vector_values("IN04=0.2", "sdxl_ext")


def test_extended_sdxl_sliders_merge_by_fine_block(tmp_path, sdxl):
    """The 110 sliders of the MBW tab reach the engine: one fine slot at 1, the rest at 0."""
    import shutil

    import torch
    from safetensors.torch import load_file

    for p in sdxl[:2]:
        shutil.copy(p, tmp_path / p.name)
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    arch = "SDXL extended (110)"
    count = len(SCHEMAS["sdxl_ext"].names_with_vae())
    filled = [fill(arch, "IN411=1 *=0") for fill, _ in handlers(demo, "alloy_mbw_apply")]
    updates = [u for out in filled for u in out if isinstance(u, dict) and "value" in u]
    assert len(updates) == count and sum(u["value"] for u in updates) == 1
    fn, inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    values[ids.index("alloy_model_a")], values[ids.index("alloy_model_b")] = sdxl[0].name, sdxl[1].name
    values[ids.index("alloy_save_name")] = "fine"
    values[ids.index("alloy_save_dtype")] = "fp32"
    values[ids.index("alloy_use_mbw")] = True
    values[ids.index("alloy_mbw_arch")] = arch
    for slot, update_ in zip(SCHEMAS["sdxl_ext"].names_with_vae(), updates):
        values[ids.index(f"alloy_sdxl_ext_{slot}")] = update_["value"]
    status, recipe, _ = last(fn(*values))
    assert status.startswith("Saved"), status
    out, a, b = (load_file(p) for p in (tmp_path / "fine.safetensors", sdxl[0], sdxl[1]))
    prefix = "model.diffusion_model.input_blocks.4.1.transformer_blocks."
    hit, other = prefix + "1.attn1.to_q.weight", prefix + "0.attn1.to_q.weight"
    assert torch.equal(out[hit], b[hit].float()) and torch.equal(out[other], a[other].float())


def test_restore_finds_models_by_short_hash_then_name():
    titles = ["base.safetensors [1234567890]", "sub/fooMix.safetensors [abcdefabcd]"]
    settings = {
        "a": "base.safetensors [0000000000]",
        "b": "gone.safetensors",
        "c": "fooMix_old",
        "mode": "add",
        "alpha": 0.4,
    }
    values, notes = restore_values(settings, "A=base.safetensors [1234567890];B=gone.safetensors [ffff]", titles)
    assert values["model_a"] == titles[0] and values["model_b"] is None and values["model_c"] is None
    assert notes == ["model B not found: gone.safetensors", "model C not found: fooMix_old"]
    assert values["alpha"] == 0.4


def test_history_page_shows_newest_first(tmp_path, monkeypatch):
    from lib_merge.app.history import read_history
    from lib_merge.ui.history_tab import table_rows

    path = tmp_path / "h.csv"
    for i in range(25):
        append_history(RowDraft(f"m{i}", f"{i:064x}", "A=a [x]", {}, "not saved", "r"), path)
    rows = read_history(path).rows
    shown = table_rows(rows, "20")
    assert len(shown) == 20 and shown[0][0] == 25 and shown[-1][0] == 6
    assert len(table_rows(rows, "all")) == 25
    assert np.array_equal([r[0] for r in table_rows(rows, "all")], list(range(25, 0, -1)))


def test_calc_mode_limits_the_modes_and_new_controls_reach_the_recipe(tmp_path, sd1):
    import shutil

    for p in sd1:
        shutil.copy(p, tmp_path / p.name)
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    changed, inputs = handler_for_change(demo, "alloy_calc")
    chosen = changed("trainDifference", "weighted_sum")
    assert chosen["choices"] in (["add_difference"], [("add_difference", "add_difference")])
    assert chosen["value"] == "add_difference"
    fn, inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    for elem_id, value in {
        "alloy_model_a": sd1[0].name, "alloy_model_b": sd1[1].name, "alloy_model_c": sd1[2].name,
        "alloy_mode": "add_difference", "alloy_calc": "trainDifference", "alloy_elemental": "OUT03::0.2",
        "alloy_filter_mode": "Exclude", "alloy_filter_text": "VAE attn2", "alloy_adjust_4": 1.0,
    }.items():  # fmt: skip
        values[ids.index(elem_id)] = value
    status, recipe, _ = last(fn(*values))
    assert status.startswith("Saved"), status
    assert 'train_difference(A, B, C, alpha=0.5, elemental=elemental("OUT03::0.2")' in recipe
    assert 'merged = adjust(m1, "0,0,0,0,1.0,0,0,0", filter=exclude("VAE", elements=["attn2"]))' in recipe


def test_the_rebasin_checkbox_merges_b_re_based_to_a(tmp_path):
    from lib_merge.io.synth import SynthSpec, write_synthetic

    for name, seed in (("rb_a", 41), ("rb_b", 42)):  # scale 8: SD1's 8 heads split the miniature's channels
        write_synthetic(str(tmp_path / f"{name}.safetensors"), SynthSpec("sd1", scale=8, seed=seed))
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    fn, inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    for elem_id, value in {
        "alloy_model_a": "rb_a.safetensors", "alloy_model_b": "rb_b.safetensors", "alloy_rebasin": True,
    }.items():  # fmt: skip
        values[ids.index(elem_id)] = value
    status, recipe, _ = last(fn(*values))
    assert status.startswith("Saved") and "re-basin: matched" in status, status
    assert "m1 = rebasin(B, ref=A, max_sweeps=10)" in recipe and "weighted_sum(A, m1, alpha=0.5)" in recipe


def handler_for_change(demo, elem_id):
    """The .change handler of a component (Gradio 3 and 4)."""
    block = by_elem_id(demo, elem_id)
    if isinstance(demo.fns, dict):
        for fn in demo.fns.values():
            if (block._id, "change") in [tuple(t) for t in fn.targets]:
                return fn.fn, list(fn.inputs)
    else:
        for index, dep in enumerate(demo.dependencies):
            targets = dep["targets"]
            if targets and isinstance(targets[0], (list, tuple)):
                hit = [block._id, "change"] in [list(t) for t in targets]
            else:
                hit = dep.get("trigger") == "change" and block._id in targets
            if hit:
                return demo.fns[index].fn, [demo.blocks[i] for i in dep["inputs"]]
    raise AssertionError(f"no change handler on {elem_id}")


def test_a_modern_method_from_the_merge_tab(tmp_path, sd1):
    import shutil

    for p in sd1:
        shutil.copy(p, tmp_path / p.name)
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    fn, inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    for elem_id, value in {
        "alloy_model_a": sd1[0].name, "alloy_model_b": sd1[1].name, "alloy_more_models": [sd1[2].name],
        "alloy_method": "dare_ties", "alloy_dare_ties_p": 0.3, "alloy_dare_ties_seed": "7",
        "alloy_dare_ties_alpha": 0.8, "alloy_dare_ties_sign": "count",
    }.items():  # fmt: skip
        values[ids.index(elem_id)] = value
    status, recipe, _ = last(fn(*values))
    assert status.startswith("Saved"), status
    assert 'merged = dare_ties(A, B, C, alpha=0.8, p=0.3, seed=7, sign="count")' in recipe
    load_settings, _ = handler(demo, "alloy_history_load")
    updates = load_settings(-1)
    restored = dict(zip(ids, [u.get("value") if isinstance(u, dict) else None for u in updates[:-1]], strict=True))
    assert restored["alloy_method"] == "dare_ties" and restored["alloy_model_b"] == sd1[1].name
    assert restored["alloy_model_c"] == sd1[2].name and restored["alloy_more_models"] == []  # same model order
    assert restored["alloy_dare_ties_p"] == 0.3 and restored["alloy_dare_ties_seed"] == "7"
    assert restored["alloy_dare_ties_sign"] == "count" and restored["alloy_dare_ties_alpha"] == 0.8


def test_template_in_the_recipe_box_gets_one_field_per_parameter(tmp_path, sd1):
    import shutil

    import torch
    from safetensors.torch import load_file

    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    template = (
        f'alloy-recipe 1\nA = param("base")\nB = model("{sd1[1].name}")\n'
        'merged = weighted_sum(A, B, alpha=param("alpha"))\n'
    )
    fields, _ = handler(demo, "alloy_recipe")
    updates = fields(template)
    assert [u["visible"] for u in updates[:3]] == [True, True, False]
    assert [u["label"] for u in updates[:2]] == ["param 'alpha'", "param 'base'"]
    assert not any(u["visible"] for u in fields("not a recipe"))
    fn, inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    values[ids.index("alloy_use_recipe")] = True
    values[ids.index("alloy_recipe")] = template
    values[ids.index("alloy_save_name")] = "templated"
    values[ids.index("alloy_save_dtype")] = "fp32"
    values[ids.index("alloy_template_0")] = "0.25"
    status, _, _ = last(fn(*values))
    assert "unfilled parameters: base" in status, status
    values[ids.index("alloy_template_1")] = sd1[0].name
    status, recipe, _ = last(fn(*values))
    assert status.startswith("Saved"), status
    out, a, b = (load_file(p) for p in (tmp_path / "templated.safetensors", sd1[0], sd1[1]))
    key = "model.diffusion_model.out.2.weight"
    expected = a[key].double() * 0.75 + b[key].double() * 0.25
    assert torch.allclose(out[key].double(), expected, atol=1e-6)


def test_the_merge_button_shows_the_progress_of_the_running_merge(tmp_path, sd1, monkeypatch):
    """The status line follows the workbench's progress as it changes (it once stayed at 'idle')."""
    import time

    from lib_merge.app.workbench import Progress
    from lib_merge.engine.progress import ProgressEvent
    from lib_merge.errors import Cancelled

    bench = Workbench(FolderHost(str(tmp_path)))
    demo = build_ui(bench)

    def slow_merge(request):
        bench.progress = Progress("merging into the loaded model")
        bench.progress.update(ProgressEvent("merging", 5, 10, "tensors", 50 * 2**20, 100 * 2**20))
        time.sleep(1.3)
        raise Cancelled("merge cancelled")

    monkeypatch.setattr(bench, "merge", slow_merge)
    fn, inputs = handler(demo, "alloy_merge")
    values = [c.value for c in inputs]
    ids = [c.elem_id for c in inputs]
    values[ids.index("alloy_model_a")], values[ids.index("alloy_model_b")] = sd1[0].name, sd1[1].name
    statuses = [out[0] if isinstance(out, (list, tuple)) else out for out in fn(*values)]
    texts = [s if isinstance(s, str) else str(s) for s in statuses]
    assert any("merging into the loaded model: 5/10 tensors, 50/100 MB" in t for t in texts), texts
    assert "merge cancelled" in texts[-1]


def test_model_a_starts_as_the_loaded_checkpoint_and_follows_the_webuis_selector(webui):
    """Model A shows the checkpoint the WebUI has loaded, follows its checkpoint dropdown, and while an Alloy
    merge is loaded it shows that merge's model A (a merge is no file to merge from)."""
    from lib_merge.app.requests import MergeRequest
    from lib_merge.recipe.form import MergeSettings
    from lib_merge.ui.app import follow_checkpoint

    host = webui.host
    demo = build_ui(webui.workbench)
    model_a = by_elem_id(demo, "alloy_model_a")
    assert model_a.value == webui.title("model_a")
    with gr.Blocks() as page:  # the WebUI's quicksettings dropdown lives in another Blocks
        selector = gr.Dropdown(host.checkpoint_titles(), elem_id="setting_sd_model_checkpoint")
        follow_checkpoint(selector, model_a, host)
    follow, _ = handler(page, "setting_sd_model_checkpoint", outside=[model_a])
    assert follow(webui.title("model_b"))["value"] == webui.title("model_b")
    webui.workbench.merge(MergeRequest(MergeSettings(webui.title("model_a"), webui.title("model_b"))))
    merged_title = webui.model.sd_checkpoint_info.title
    assert merged_title not in host.checkpoint_titles()
    assert follow(merged_title)["value"] == webui.title("model_a")
    assert build_ui(webui.workbench).blocks  # built again while the merge is loaded
    assert host.selected_checkpoint() == webui.title("model_a")


def test_history_tab_lists_the_newest_rows_when_built_and_when_opened(tmp_path, sd1, monkeypatch):
    import shutil

    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    bench = Workbench(FolderHost(str(tmp_path)))
    for i in range(3):
        append_history(RowDraft(f"row{i}", f"{i}" * 64, "A=a [0]", {}, "not saved", "r"), bench.history_path())
    demo = build_ui(bench)
    table = by_elem_id(demo, "alloy_history_table")
    shown = table.value["data"]
    assert [row[2] for row in shown] == ["row2", "row1", "row0"]
    append_history(RowDraft("row3", "3" * 64, "A=a [0]", {}, "not saved", "r"), bench.history_path())
    opened, inputs = handler(demo, "alloy_tab_history")
    rows, note = opened("", "and", "50")
    assert [row[2] for row in table_rows(rows)] == ["row3", "row2", "row1", "row0"] and note.startswith("4 of 4 rows")
