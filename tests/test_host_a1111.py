"""The A1111 host adapter against the WebUI double: the image proves which weights were used."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers import load

from lib_merge.app.ports import GenSettings
from lib_merge.app.workbench import MergeRequest, SaveRequest
from lib_merge.engine.live import model_tensors
from lib_merge.errors import ModelNotFoundError, ParameterError, UnsafePathError
from lib_merge.recipe.form import MergeSettings


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0])


def gen(webui, **kw):
    return webui.workbench.generate(GenSettings(**(gen_defaults() | kw)))


def merge(webui, alpha=0.4, mode="weighted_sum", c=None, **kw):
    settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), mode, c, alpha)
    return webui.workbench.merge(MergeRequest(settings=settings, **kw))


def image_of_file(webui, path: str) -> np.ndarray:
    """Select a saved file in the double as a user would, and generate with the same settings."""
    webui.sd_models.list_models()
    webui.shared.opts.set("sd_model_checkpoint", webui.title(os.path.basename(path)))
    return pixels(gen(webui))


def test_merge_changes_the_image_save_gives_the_same_image_and_restore_gives_a_back(webui):
    image_a = pixels(gen(webui))
    outcome = merge(webui, 0.4)
    merged = pixels(gen(webui))
    assert not np.array_equal(merged, image_a)
    path = webui.workbench.save_current(SaveRequest(name="saved_merge"))
    assert os.path.dirname(path) == str(webui.folder)
    # The live model equals the saved file: same bits, so the WebUI draws the same image from the file.
    live = model_tensors(webui.model)
    for key, tensor in load(path).items():
        assert torch.equal(live[key], tensor.to(live[key].dtype)), key
    assert webui.workbench.restore().startswith("Restored")
    assert np.array_equal(pixels(gen(webui)), image_a)
    assert np.array_equal(image_of_file(webui, path), merged)
    assert outcome.history_id == 1


def test_generation_keeps_the_patch_and_infotext_names_the_merge(webui):
    loads = len(webui.sd_models.loads)
    outcome = merge(webui, 0.3)
    result = gen(webui)
    assert len(webui.sd_models.loads) == loads  # process_images did not reload model A
    short = outcome.recipe_hash[:10]
    assert f"Model hash: {short}" in result.infotext
    assert f"Model: {outcome.name}" in result.infotext
    assert f"Alloy recipe: {short}" in result.infotext
    assert f"Alloy history: {outcome.history_id}" in result.infotext
    # The user's own txt2img tab keeps the merge too (the selected entry is the merge).
    assert webui.txt2img().info.count(f"Model hash: {short}") == 1
    assert len(webui.sd_models.loads) == loads
    entry = webui.model.sd_checkpoint_info
    assert entry.title == f"{outcome.name}.safetensors [{short}]"
    assert entry.sha256 == outcome.recipe_hash and entry.hash == outcome.recipe_hash[:8]
    assert entry.filename.endswith(".alloy-merge") and not os.path.exists(entry.filename)
    assert f"checkpoint/{entry.name}" not in webui.sd_models.hash_cache  # no fake hash in the host's cache


def test_settings_are_honoured_not_the_ui_defaults_of_the_builtin_scripts(webui):
    result = gen(webui, steps=3, sampler="Euler", seed=1234)
    assert "Steps: 3" in result.infotext and "Sampler: Euler" in result.infotext and "Seed: 1234" in result.infotext


def test_choosing_another_checkpoint_loads_it_cleanly_and_drops_the_entry(webui):
    image_a = pixels(gen(webui))
    outcome = merge(webui, 0.5)
    title = webui.model.sd_checkpoint_info.title
    webui.shared.opts.set("sd_model_checkpoint", webui.title("model_b"))
    assert webui.model.sd_checkpoint_info.name == "model_b.safetensors"
    assert title not in webui.sd_models.checkpoints_list
    assert outcome.recipe_hash not in webui.sd_models.checkpoint_aliases
    assert webui.workbench.live is None and not webui.workbench.backup.originals and not webui.workbench.backup.patched
    webui.shared.opts.set("sd_model_checkpoint", webui.title("model_a"))
    assert np.array_equal(pixels(gen(webui)), image_a)


def test_second_merge_starts_from_a_and_a_new_a_is_loaded_first(webui):
    merge(webui, 0.9)
    second = merge(webui, 0.2)
    path = webui.workbench.save_current(SaveRequest(name="second"))
    live = model_tensors(webui.model)
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in load(path).items())
    # Now a merge with C as primary: the host loads C first, then patches.
    settings = MergeSettings(webui.title("model_c"), webui.title("model_b"), "weighted_sum", alpha=0.5)
    third = webui.workbench.merge(MergeRequest(settings=settings))
    assert third.recipe_hash != second.recipe_hash
    assert webui.sd_models.loads[-1].endswith("model_c.safetensors")
    webui.workbench.restore()
    c = load(webui.folder / "model_c.safetensors")
    live = model_tensors(webui.model)
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in c.items())


def test_lora_backups_are_cleaned_before_the_patch(webui):
    import networks

    gen(webui, prompt="a cat <lora:probe:1>")  # the LoRA extension now holds backups of A
    merge(webui, 0.6)
    merged = pixels(gen(webui))  # without LoRA: the stale backups of A must not come back
    path = webui.workbench.save_current(SaveRequest(name="lora_check"))
    live = model_tensors(webui.model)
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in load(path).items())
    lora_image = pixels(gen(webui, prompt="a cat <lora:probe:1>"))
    assert not np.array_equal(lora_image, merged)
    weight = live["model.diffusion_model.out.2.weight"]
    expected = load(path)["model.diffusion_model.out.2.weight"].to(weight.dtype) + networks.DELTA
    assert torch.equal(weight, expected)  # LoRA on top of the merge
    assert np.array_equal(pixels(gen(webui)), merged)  # and back to the merge without it


def test_refresh_drops_the_entry_and_alloy_registers_it_again(webui):
    outcome = merge(webui, 0.3)
    webui.sd_models.list_models()  # the WebUI's own refresh button
    loads = len(webui.sd_models.loads)
    result = gen(webui)
    assert len(webui.sd_models.loads) == loads
    assert f"Model hash: {outcome.recipe_hash[:10]}" in result.infotext
    webui.host.refresh_checkpoints()  # Alloy's refresh keeps it registered
    assert webui.model.sd_checkpoint_info.title in webui.sd_models.checkpoints_list
    assert webui.model.sd_checkpoint_info.title not in webui.host.checkpoint_titles()


def test_external_vae_is_kept(webui):
    webui.sd_vae.loaded_vae_file = "/models/VAE/other.vae.safetensors"
    vae_key = "first_stage_model.decoder.conv_out.weight"
    before = model_tensors(webui.model)[vae_key].clone()
    outcome = merge(webui, 0.5)
    assert "external VAE kept" in outcome.message
    assert torch.equal(model_tensors(webui.model)[vae_key], before)
    unet_key = "model.diffusion_model.out.2.weight"
    a, b = load(webui.folder / "model_a.safetensors")[unet_key], load(webui.folder / "model_b.safetensors")[unet_key]
    assert not torch.equal(model_tensors(webui.model)[unet_key], a) and not torch.equal(a, b)


def test_names_resolve_only_inside_the_checkpoint_folders(webui, tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    with pytest.raises(UnsafePathError, match="outside"):
        webui.host.resolve_checkpoint("../../outside.safetensors")
    with pytest.raises(ModelNotFoundError, match="nope"):
        webui.host.resolve_checkpoint("nope.safetensors")
    assert webui.host.resolve_checkpoint("model_b") == str(webui.folder / "model_b.safetensors")
    outcome = merge(webui, 0.5)
    with pytest.raises(ModelNotFoundError, match="live merge"):
        webui.host.resolve_checkpoint(webui.model.sd_checkpoint_info.title)
    assert outcome.name


def test_failed_merge_changes_nothing(webui):
    image_a = pixels(gen(webui))
    with pytest.raises(ParameterError):
        webui.workbench.merge(MergeRequest(recipe=None, settings=None))
    settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), "add_difference", None, 0.5)
    with pytest.raises(Exception, match="model C"):
        webui.workbench.merge(MergeRequest(settings=settings))
    assert np.array_equal(pixels(gen(webui)), image_a)
    assert webui.workbench.live is None


def test_history_logs_every_merge_and_save_current_needs_a_merge(webui):
    from lib_merge.app.history import read_history

    with pytest.raises(ParameterError, match="not an Alloy merge"):
        webui.workbench.save_current(SaveRequest())
    first = merge(webui, 0.1)
    second = merge(webui, 0.2, save=SaveRequest(name="kept", dtype="fp32"))
    rows = read_history(webui.workbench.history_path()).rows
    assert [r.id for r in rows] == [first.history_id, second.history_id] == [1, 2]
    assert rows[0].output == "not saved" and rows[1].output == second.path
    assert rows[1].recipe_hash == second.recipe_hash and "A=model_a.safetensors [" in rows[1].models
    assert rows[1].settings["alpha"] == 0.2 and rows[1].settings["save"]["dtype"] == "fp32"
    assert load(second.path)["model.diffusion_model.out.2.weight"].dtype == torch.float32


def test_a_linked_checkpoint_keeps_its_listed_name(webui, sd1):
    (webui.folder / "linked.safetensors").symlink_to(sd1[1])  # a link to a file outside the folder
    webui.sd_models.list_models()
    settings = MergeSettings(webui.title("model_a"), webui.title("linked"), "weighted_sum", alpha=0.5)
    outcome = webui.workbench.merge(MergeRequest(settings=settings))
    assert outcome.name.startswith("model_a_x_linked_ws_a0.5-")
    assert 'B = model("linked.safetensors"' in outcome.recipe_text


def test_stop_during_a_merge_leaves_model_a(webui, monkeypatch):
    from lib_merge.app.history import read_history
    from lib_merge.errors import Cancelled

    image_a = pixels(gen(webui))
    merge(webui, 0.5)
    webui.workbench.restore()
    monkeypatch.setattr(webui.host, "before_patch", lambda: webui.workbench.stop())  # Stop pressed mid-merge
    with pytest.raises(Cancelled):
        merge(webui, 0.7)
    assert webui.shared.state.interrupted  # generation is interrupted through the host too
    assert np.array_equal(pixels(gen(webui)), image_a)
    assert webui.model.sd_checkpoint_info.name == "model_a.safetensors" and webui.workbench.live is None
    assert len(read_history(webui.workbench.history_path()).rows) == 1


def test_a_failed_save_after_merging_keeps_the_merge_and_says_why(webui):
    (webui.folder / "taken.safetensors").write_bytes(b"not a model")
    outcome = merge(webui, 0.5, save=SaveRequest(name="taken"))
    assert outcome.path is None and "Not saved:" in outcome.message and "exists" in outcome.message
    assert webui.model.sd_checkpoint_info.sha256 == outcome.recipe_hash  # the merge is live and named
    assert (webui.folder / "taken.safetensors").read_bytes() == b"not a model"
    assert webui.workbench.live.history_id == outcome.history_id == 1


def test_forge_saves_and_loads_the_merge_through_its_own_switch(webui):
    import sys

    from lib_merge.app.workbench import Workbench
    from lib_merge.host.a1111 import connect
    from lib_merge.host.forge import ForgeHost, is_forge

    assert is_forge()  # the double carries modules_forge
    workbench = Workbench(ForgeHost())
    connect(workbench)
    image_a = pixels(gen(webui))
    settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), "weighted_sum", alpha=0.4)
    outcome = workbench.merge(MergeRequest(settings=settings))
    assert outcome.path and os.path.dirname(outcome.path) == str(webui.folder)
    assert webui.model.sd_checkpoint_info.filename == outcome.path  # Forge loaded the file itself
    result = workbench.generate(GenSettings(**gen_defaults()))
    assert f"Alloy history: {outcome.history_id}" in result.infotext
    assert f"Model: {outcome.name}" in result.infotext
    assert workbench.save_current(SaveRequest()) == outcome.path
    live = model_tensors(webui.model)
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in load(outcome.path).items())
    assert workbench.restore().startswith("Selected model A")
    assert np.array_equal(pixels(workbench.generate(GenSettings(**gen_defaults()))), image_a)
    assert "modules_forge" in sys.modules


def gen_defaults() -> dict:
    return dict(
        prompt="a cat",
        negative_prompt="",
        steps=3,
        sampler="Euler",
        seed=7,
        width=64,
        height=64,
        batch_size=1,
        n_iter=1,
        cfg_scale=7.0,
    )


def test_the_users_last_run_is_the_fallback_and_api_runs_are_not(webui):
    """A txt2img run of the user's sets what Alloy's generations start from; an API run (another program's,
    or a driver that fans a plot out over several WebUIs) does not."""
    fields = dict(prompt="a fox", negative_prompt="", steps=7, sampler_name="Euler", cfg_scale=5.0, seed=3, subseed=-1,
                  subseed_strength=0.0, width=64, height=64, batch_size=1, n_iter=1)  # fmt: skip
    webui.host.capture_run(webui.processing.StableDiffusionProcessingTxt2Img(**fields))
    assert (webui.host.base_settings().prompt, webui.host.base_settings().steps) == ("a fox", 7)
    api_run = webui.processing.StableDiffusionProcessingTxt2Img(**{**fields, "prompt": "a robot", "steps": 2})
    api_run.is_api = True
    webui.host.capture_run(api_run)
    assert (webui.host.base_settings().prompt, webui.host.base_settings().steps) == ("a fox", 7)
