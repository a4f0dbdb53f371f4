"""The Forge host adapter against the Forge double (tests/forge_double): the merge goes into Forge's own
component modules, equals what Forge builds from the saved file, survives generation, restores exactly,
and leaves Forge's LoRAs on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from forge_host import Forge

from lib_merge.app.workbench import SaveRequest


@pytest.fixture(params=["sd1", "sdxl"])
def forge(request, tmp_path):
    ui = Forge(tmp_path, request.getfixturevalue(request.param))
    yield ui
    ui.close()


@pytest.fixture
def forge_sd1(tmp_path, sd1):
    ui = Forge(tmp_path, sd1)
    yield ui
    ui.close()


def component_tensors(model) -> dict[str, torch.Tensor]:
    """Every tensor of Forge's component modules, by component and name."""
    objects = model.forge_objects_original
    modules = {"unet": objects.unet.model, "clip": objects.clip.cond_stage_model, "vae": objects.vae.first_stage_model}
    named = {c: {**dict(m.named_buffers()), **dict(m.named_parameters())} for c, m in modules.items()}
    return {f"{c}/{n}": t for c, tensors in named.items() for n, t in tensors.items()}


def forge_loads(path) -> dict[str, torch.Tensor]:
    """What Forge itself builds from a checkpoint file: the reference for a live merge."""
    from backend.loader import forge_loader
    from modules.processing import widen_embeddings

    model = forge_loader(str(path))
    widen_embeddings(model)  # as the first prompt does
    return component_tensors(model)


def assert_same(live: dict, reference: dict) -> None:
    assert live.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(live[name], tensor), name


def test_the_merge_goes_into_forges_modules_as_forge_would_load_it_and_restore_is_exact(forge):
    image_a = forge.image()
    assert all(t.is_inference() for t in component_tensors(forge.model).values())  # as Forge loads them
    outcome = forge.merge(0.4)
    assert "into the loaded model" in outcome.message
    merged = forge.image()
    assert not np.array_equal(merged, image_a)
    path = forge.workbench.save_current(SaveRequest(name="saved_merge", dtype="fp32"))  # as Forge holds it
    assert_same(component_tensors(forge.model), forge_loads(path))  # split q/k/v and transposes included
    assert forge.workbench.restore().startswith("Restored")
    assert np.array_equal(forge.image(), image_a)
    assert_same(component_tensors(forge.model), forge_loads(forge.folder / "model_a.safetensors"))


def test_each_key_has_its_place_in_forge(forge):
    from lib_merge.engine.parts import StoredParts

    view = forge.host.patch_target()
    tensors = view.checkpoint_tensors()
    assert view.unused_keys == set()
    unet = forge.model.forge_objects_original.unet.model.diffusion_model
    assert tensors["model.diffusion_model.out.2.weight"] is unet.get_parameter("out.2.weight")
    if "conditioner.embedders.1.model.text_projection" in view.shapes:  # SDXL's OpenCLIP-G
        fused = tensors["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]
        third = fused.shape[0] // 3
        assert isinstance(fused, StoredParts)
        assert [p.rows for p in fused.parts] == [(0, third), (third, 2 * third), (2 * third, 3 * third)]
        projection = tensors["conditioner.embedders.1.model.text_projection"]
        assert isinstance(projection, StoredParts) and projection.parts[0].transposed


def test_keys_forge_does_not_load_are_left_out_of_the_merge(tmp_path, models, sd1):
    """The noise schedule's buffers lie outside every component: Forge never loads them."""
    a = models("sd1_sched_a", arch="sd1", seed=1, schedule=True)
    forge = Forge(tmp_path, [a, sd1[1], sd1[2]])
    try:
        view = forge.host.patch_target()
        assert view.unused_keys and all("." not in k for k in view.unused_keys)  # betas, alphas_cumprod, ...
        image_a = forge.image()
        assert forge.merge(0.5).merged
        assert not np.array_equal(forge.image(), image_a)
        assert forge.workbench.restore().startswith("Restored")
        assert np.array_equal(forge.image(), image_a)
    finally:
        forge.close()


def test_generation_keeps_the_merge_names_it_and_any_checkpoint_choice_reloads_from_disk(forge_sd1):
    forge = forge_sd1
    image_a = forge.image()
    outcome = forge.merge(0.3)
    loads = len(forge.sd_models.loads)
    result = forge.gen()
    assert len(forge.sd_models.loads) == loads  # forge_model_reload kept the patched model
    assert f"Model: {outcome.name}" in result.infotext
    assert f"Model hash: {outcome.recipe_hash[:10]}" in result.infotext
    assert f"Alloy history: {outcome.history_id}" in result.infotext
    forge.choose("model_a")  # model A itself, chosen again: loaded from disk, the merge is gone
    assert np.array_equal(forge.image(), image_a)
    assert len(forge.sd_models.loads) == loads + 1
    assert forge.workbench.live is None and not forge.workbench.backup.patched
    forge.merge(0.3)
    forge.choose("model_b")
    image_b = forge.image()
    forge.choose("model_a")
    assert np.array_equal(forge.image(), image_a) and not np.array_equal(image_b, image_a)


def test_a_lora_applies_on_top_of_the_merge_and_never_sticks(forge_sd1):
    forge = forge_sd1
    image_a = forge.image()
    forge.merge(0.6)
    merged = forge.image()
    with_lora = forge.image("a cat <lora:style>")
    assert not np.array_equal(with_lora, merged)
    assert np.array_equal(forge.image(), merged)  # the LoRA is not baked in
    forge.image("a cat <lora:style>")  # applied now: Forge's loader holds the merged weights as backups
    forge.merge(0.2)  # merging while it is applied: from model A's true weights, not A + LoRA
    merged_02 = forge.image()
    assert forge.workbench.restore().startswith("Restored")
    assert np.array_equal(forge.image(), image_a)
    forge.merge(0.2)
    assert np.array_equal(forge.image(), merged_02)
    forge.image("a cat <lora:style>")
    assert forge.workbench.restore().startswith("Restored")  # restore while a LoRA is applied
    assert np.array_equal(forge.image(), image_a)


def test_without_component_modules_forge_saves_and_loads(tmp_path, sd1):
    from lib_merge.ui.merge_events import footer_text

    forge = Forge(tmp_path, sd1, patch=False)
    try:
        assert footer_text(forge.workbench).startswith("Mode: save and load")
        image_a = forge.image()
        outcome = forge.merge(0.4)
        assert outcome.path and Path(outcome.path).parent == forge.folder
        assert not np.array_equal(forge.image(), image_a)
        assert forge.model.sd_checkpoint_info.filename == outcome.path  # Forge loaded the file itself
        assert forge.workbench.restore().startswith("Selected model A")
        assert np.array_equal(forge.image(), image_a)
    finally:
        forge.close()


def test_the_footer_says_in_place(forge_sd1):
    from lib_merge.ui.merge_events import footer_text

    assert footer_text(forge_sd1.workbench).startswith("Mode: in place")


def test_a_vae_chosen_in_forges_module_list_is_kept(forge_sd1, tmp_path):
    from safetensors.torch import load_file, save_file

    forge = forge_sd1
    prefix = "first_stage_model."
    vae = {
        k[len(prefix) :]: v for k, v in load_file(forge.folder / "model_c.safetensors").items() if k.startswith(prefix)
    }
    save_file(vae, str(tmp_path / "my_vae.safetensors"))
    forge.shared.opts.data["forge_additional_modules"] = [str(tmp_path / "my_vae.safetensors")]
    before = {k: v.clone() for k, v in component_tensors(forge.model).items() if k.startswith("vae/")}
    outcome = forge.merge(0.5)
    assert "VAE: external VAE kept" in outcome.message
    after = component_tensors(forge.model)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    model_a = forge_loads(forge.folder / "model_a.safetensors")
    assert not torch.equal(after["unet/diffusion_model.out.2.weight"], model_a["unet/diffusion_model.out.2.weight"])


def test_a_forge_conversion_alloy_cannot_follow_is_refused_with_the_reason(forge_sd1):
    """A conversion step that needs tensor values (here a concatenation) stops the map before any write."""
    from lib_merge.errors import HostPatchError
    from lib_merge.host.forge_keys import trace_conversion

    class Joins(type(forge_sd1.model.model_config)):
        def process_clip_state_dict(self, sd):
            sd = super().process_clip_state_dict(sd)
            q = "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
            sd["joined"] = torch.cat([sd[q], sd[q]])
            return sd

    stored = {
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": ((8, 8), torch.float16)
    }
    with pytest.raises(HostPatchError, match="could not be traced"):
        trace_conversion(Joins(), stored)


def test_row_slices_and_transposes_are_traced_like_the_tensors_they_stand_for():
    from lib_merge.engine.parts import Part, StoredParts
    from lib_merge.host.forge_keys import KeyTrace

    fused = torch.arange(24.0).reshape(6, 4)
    trace = KeyTrace("k", (6, 4), torch.float32)
    thirds = [trace[2 * i : 2 * (i + 1)] for i in range(3)]
    twice = trace[2:6][1:3]  # a slice of a slice: rows 3 and 4
    assert twice.rows == (3, 5) and torch.equal(Part(fused, twice.rows).of(fused), fused[2:6][1:3])
    flipped = trace.transpose(0, 1)
    assert flipped.shape == (4, 6) and flipped.transposed
    parts = [Part(torch.zeros(2, 4), t.rows) for t in thirds] + [Part(torch.zeros(4, 6), None, True)]
    whole = StoredParts(parts, (6, 4))
    whole.copy_(fused)
    assert all(torch.equal(p.tensor, p.of(fused)) for p in parts)
    assert torch.equal(whole.detach(), fused)


def test_the_switch_makes_forge_save_and_load(forge_sd1, monkeypatch):
    from lib_merge.host.forge import SAVE_AND_LOAD_SWITCH, ForgeHost

    monkeypatch.setenv(SAVE_AND_LOAD_SWITCH, "1")
    assert not ForgeHost().can_patch
    monkeypatch.setenv(SAVE_AND_LOAD_SWITCH, "0")
    assert ForgeHost().can_patch


def test_forges_inference_tensors_are_computed_into_not_copied_into(forge_sd1, monkeypatch):
    """The engine's workers run in inference mode for such a model, so results land in the parameters."""
    from lib_merge.engine.live import LiveModelSink

    seen = []
    put = LiveModelSink.put

    def spy(self, key, tensor):
        target = self.targets[key]
        if isinstance(target, torch.Tensor) and target.dtype == torch.float32 and target.dim() > 1:
            seen.append(tensor.data_ptr() == target.data_ptr())
        return put(self, key, tensor)

    monkeypatch.setattr(LiveModelSink, "put", spy)
    forge_sd1.merge(0.4)
    assert seen and all(seen)


def test_the_merge_chosen_again_in_forges_list_stays_loaded_and_is_not_read_from_its_name(forge_sd1):
    forge = forge_sd1
    outcome = forge.merge(0.3)
    merged = forge.image()
    merge_name = forge.shared.opts.data["sd_model_checkpoint"]
    assert merge_name == f"{outcome.name}.safetensors"  # what Forge's dropdown lists (names, not titles)
    assert merge_name in forge.main_entry.refresh_models()  # listed after a page load's refresh too
    loads = len(forge.sd_models.loads)
    forge.choose("model_b")
    forge.main_entry.checkpoint_change(merge_name)  # back to the merge before any generation
    assert np.array_equal(forge.image(), merged)
    assert len(forge.sd_models.loads) == loads and forge.workbench.live is not None
