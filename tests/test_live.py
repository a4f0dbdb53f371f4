"""Merging into a loaded torch model in place: exact values, exact restore, all or nothing."""

from __future__ import annotations

import pytest
import torch
from helpers import build_model, load
from test_merge import merge, recipe

from lib_merge.engine.live import LiveBackup, merge_into_model, model_tensors
from lib_merge.engine.options import CancelToken, EngineOptions
from lib_merge.errors import Cancelled, HostPatchError
from lib_merge.recipe import parse_recipe


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: t.detach().clone() for k, t in model_tensors(model).items()}


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_live_merge_equals_the_saved_merge_and_restores_exactly(sd1, tmp_path, dtype):
    model = build_model(load(sd1[0]), dtype)
    original = snapshot(model)
    backup = LiveBackup()
    text = recipe("weighted_sum", sd1[:2], alpha='blocks("*=0.4 OUT*=0.8 M00=0")')
    result = merge_into_model(parse_recipe(text), model, backup)
    saved = load(merge(text, tmp_path / "m.safetensors", dtype).path)
    live = model_tensors(model)
    assert result.recipe.digest == merge(text, tmp_path / "again.safetensors", dtype).recipe_hash
    for key, tensor in saved.items():
        assert live[key].dtype == dtype or not tensor.is_floating_point()
        assert torch.equal(live[key], tensor.to(live[key].dtype)), key
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in live
    assert result.patched < len(saved)  # M00 (alpha 0) and integer keys were left alone
    assert backup.restore(model) == result.patched
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in original.items())


def test_second_merge_starts_from_a(sd1, tmp_path):
    model = build_model(load(sd1[0]), torch.float32)
    backup = LiveBackup()
    merge_into_model(parse_recipe(recipe("weighted_sum", sd1[:2], alpha=0.9)), model, backup)
    text = recipe("add_difference", sd1, alpha=0.3)
    merge_into_model(parse_recipe(text), model, backup)
    saved = load(merge(text, tmp_path / "m.safetensors", torch.float32).path)
    live = model_tensors(model)
    assert all(torch.equal(live[k], v) for k, v in saved.items())


@pytest.mark.parametrize(
    ("method", "fixture", "dtype", "key"),
    [
        ("weighted_sum", "sd1", torch.float16, "model.diffusion_model.out.2.bias"),
        # cosine's pre-pass reads A from the loaded model before the sink checks the keys
        ("cosine_b", "sd1_fp32", torch.float32, "model.diffusion_model.out.2.weight"),
    ],
)
def test_unresolvable_keys_change_nothing(method, fixture, dtype, key, request):
    paths = request.getfixturevalue(fixture)
    state = load(paths[0])
    del state[key]
    model = build_model(state, dtype)
    before = snapshot(model)
    with pytest.raises(HostPatchError, match=rf"1 keys missing.*{key}"):
        merge_into_model(parse_recipe(recipe(method, paths[:2], alpha=0.3)), model, LiveBackup())
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in before.items())


def test_cancel_puts_everything_back(sd1):
    model = build_model(load(sd1[0]), torch.float16)
    before = snapshot(model)
    token = CancelToken()

    def progress(event):
        if event.phase == "merging" and event.done == 300:
            token.cancel()

    with pytest.raises(Cancelled):
        merge_into_model(
            parse_recipe(recipe("weighted_sum", sd1[:2], alpha=0.5)),
            model,
            LiveBackup(),
            EngineOptions(progress=progress, cancel=token),
        )
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in before.items())


def test_a_tensor_reachable_under_two_names_is_patched_once():
    model = torch.nn.Module()
    model.add_module("conditioner", torch.nn.Module())
    model.conditioner.add_module("embedders", torch.nn.Linear(2, 2))
    model.add_module("cond_stage_model", model.conditioner)  # the same module under a second name
    names = model_tensors(model)
    assert sorted(names) == ["conditioner.embedders.bias", "conditioner.embedders.weight"]


def test_backups_stay_valid_after_restore_and_are_not_copied_again(sd1):
    model = build_model(load(sd1[0]), torch.float16)
    original = snapshot(model)
    backup = LiveBackup()
    merge_into_model(parse_recipe(recipe("weighted_sum", sd1[:2], alpha=0.5)), model, backup)
    copies = dict(backup.originals)
    assert backup.restore(model) == len(copies) and not backup.patched
    assert backup.restore(model) == 0  # nothing is patched any more
    merge_into_model(parse_recipe(recipe("weighted_sum", sd1[:2], alpha=0.7)), model, backup)
    assert all(backup.originals[k] is t for k, t in copies.items())  # the same copies, not new ones
    backup.restore(model)
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in original.items())
