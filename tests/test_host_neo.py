"""The Forge host adapter in Forge Neo (tests/neo_double over tests/forge_double): what Neo changed from
Forge (docs/FORGE.md, "Forge Neo") against the same merges, images and files as in Forge."""

from __future__ import annotations

import os
import shutil

import gradio as gr
import numpy as np
import pytest
from forge_host import Forge

from lib_merge.app.requests import MergeRequest, SaveRequest
from lib_merge.errors import HostPatchError, UnsafePathError
from lib_merge.recipe.form import MergeSettings


@pytest.fixture
def neo(tmp_path, sd1):
    ui = Forge(tmp_path, sd1, neo=True)
    yield ui
    ui.close()


def merge(ui, b: str, alpha: float = 0.4, **kw):
    settings = MergeSettings(ui.title("model_a"), b, "weighted_sum", alpha=alpha)
    return ui.workbench.merge(MergeRequest(settings=settings, **kw))


def test_a_merge_that_loads_model_a_first_goes_through_neos_switch(neo):
    """Right after start (Neo has loaded nothing) and with another checkpoint loaded, the merge loads
    model A through `checkpoint_change(ckpt_name, preset, …)`, and gives the same image both times."""
    assert neo.model is None  # Neo loads at the first generation
    neo.merge(0.4)
    merged = neo.image()
    assert neo.workbench.restore().startswith("Restored")
    image_a = neo.image()
    assert not np.array_equal(merged, image_a)
    neo.choose("model_b")
    image_b = neo.image()
    neo.merge(0.4)  # model A is not the loaded model
    assert np.array_equal(neo.image(), merged)
    # as Neo's own dropdown records a choice: model A is the preset's checkpoint, shown at the next page load
    assert neo.shared.opts.data["forge_checkpoint_sd"] == neo.title("model_a")
    assert neo.workbench.restore().startswith("Restored")
    assert np.array_equal(neo.image(), image_a)
    neo.choose("model_b")
    assert np.array_equal(neo.image(), image_b)


def test_save_and_load_in_neo_loads_the_file_and_restore_selects_model_a(tmp_path, sd1):
    neo = Forge(tmp_path, sd1, patch=False, neo=True)
    try:
        image_a = neo.image()
        outcome = neo.merge(0.4)
        assert neo.image().tolist() != image_a.tolist()
        assert neo.model.sd_checkpoint_info.filename == outcome.path  # Neo loaded the file itself
        assert neo.workbench.restore().startswith("Selected model A")
        assert np.array_equal(neo.image(), image_a)
    finally:
        neo.close()


def test_save_and_load_leaves_no_file_behind_when_the_webui_cannot_load_it(tmp_path, sd1, monkeypatch):
    """A load that fails after the save (as every one did in Neo with Forge's call) removes the new file;
    the user's files stay, model A stays loaded, and the error is one clear line. A file the user asked
    to overwrite is not removed."""
    neo = Forge(tmp_path, sd1, patch=False, neo=True)
    try:
        image_a = neo.image()
        shutil.copy(sd1[2], neo.folder / "mine.safetensors")
        before = {p: p.read_bytes() for p in neo.folder.iterdir()}

        def refused(ckpt_name, preset, save=True, refresh=True):
            raise ValueError("Failed to find available model...")

        monkeypatch.setattr(neo.main_entry, "checkpoint_change", refused)
        with pytest.raises(HostPatchError, match="could not load the saved merge.*removed again"):
            neo.merge(0.4)
        assert {p: p.read_bytes() for p in neo.folder.iterdir()} == before
        assert all(os.path.exists(i.filename) for i in neo.sd_models.checkpoints_list.values())
        assert neo.workbench.live is None and np.array_equal(neo.image(), image_a)
        with pytest.raises(HostPatchError, match="mine.safetensors stays"):
            neo.merge(0.4, save=SaveRequest(name="mine", overwrite=True))
        assert (neo.folder / "mine.safetensors").is_file()
    finally:
        neo.close()


def test_a_checkpoint_in_a_ckpt_dirs_folder_is_merged_by_name_or_by_path(neo, tmp_path, sd1):
    extra = tmp_path / "more checkpoints"
    extra.mkdir()
    donor = extra / "donor.safetensors"
    shutil.copy(sd1[2], donor)  # the same weights as model_c
    neo.shared.cmd_opts.ckpt_dirs.append(str(extra))  # --ckpt-dirs "more checkpoints"
    neo.host.refresh_checkpoints()
    assert neo.host.resolve_checkpoint(str(donor)) == str(donor)
    assert neo.host.resolve_checkpoint("donor.safetensors") == str(donor)
    assert neo.host.save_folder() == str(neo.folder)  # merges go where Neo's own merger writes
    merge(neo, str(donor))
    by_path = neo.image()
    merge(neo, neo.title("model_c"))
    assert np.array_equal(neo.image(), by_path)
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.copy(sd1[2], elsewhere)
    with pytest.raises(UnsafePathError):
        neo.host.resolve_checkpoint(str(elsewhere))


@pytest.mark.skipif(int(gr.__version__.split(".")[0]) < 4, reason="Neo runs Gradio 4")
def test_the_page_loads_copy_of_neos_dropdown_is_not_wired_and_model_a_follows_its_file_names(neo, monkeypatch):
    from modules import script_callbacks

    from lib_merge.app.optimize.desk import OptimizeDesk
    from lib_merge.app.plots.desk import PlotDesk
    from lib_merge.surfaces import webui as entry
    from lib_merge.ui.app import build_ui

    monkeypatch.setattr(entry, "_desks", [(PlotDesk(neo.workbench), OptimizeDesk(neo.workbench))])
    script_callbacks.on_after_component(entry.after_component)
    tab = build_ui(neo.workbench)
    model_a = next(b for b in tab.blocks.values() if getattr(b, "elem_id", None) == entry.MODEL_A)
    script_callbacks.after_component_callback(model_a, elem_id=entry.MODEL_A)
    with gr.Blocks() as page:
        dropdown = neo.main_entry.make_checkpoint_dropdown()
    follows = [fn.fn for fn in page.fns.values() if dropdown._id in [t[0] for t in fn.targets]]
    neo.main_entry.page_load(dropdown)  # every page load
    neo.main_entry.page_load(dropdown)
    assert script_callbacks.callback_errors == []
    assert len(follows) == 1
    neo.image()  # model A loaded: its title now has its hash, the dropdown still lists its file name
    neo.choose("model_b")
    # Neo's dropdown says "model_a.safetensors"; its own handler may not have set the option yet
    assert follows[0]("model_a.safetensors")["value"] == neo.title("model_a") != "model_a.safetensors"
