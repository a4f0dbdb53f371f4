"""The seam a host without a Workbench uses (a ComfyUI node): `apply_recipe` merges a recipe into any loaded
model in place, as the reference computation says, and the Workbench's live merge is that same call."""

from __future__ import annotations

import contextlib
import shutil

import pytest
import torch
from helpers import build_model, load
from test_merge import component_keys

import lib_merge.app.workbench as workbench_module
from lib_merge.app.apply import ApplyOptions, apply_recipe
from lib_merge.app.ports import MergeIdentity
from lib_merge.app.requests import MergeRequest
from lib_merge.app.workbench import Workbench
from lib_merge.engine.live import model_tensors
from lib_merge.host.folder import FolderHost

ALPHA = 0.3
RECIPE = f"""alloy-recipe 1
A = model("model_a.safetensors")
B = model("model_b.safetensors")
merged = weighted_sum(A, B, alpha={ALPHA})
"""


class ModuleModel:
    """The live-model port over a plain torch module holding model A (what a ComfyUI host would offer)."""

    can_patch = True

    def __init__(self, module: torch.nn.Module, path: str):
        self.module, self.path = module, path
        self.identity: MergeIdentity | None = None

    def exclusive(self):
        return contextlib.nullcontext()

    def loaded_file(self) -> str:
        return self.path

    def load_checkpoint(self, path: str) -> None:
        raise AssertionError(f"model A is loaded already; asked to load {path}")

    def patch_target(self) -> torch.nn.Module:
        return self.module

    def before_patch(self) -> None:
        pass

    def skip_prefixes(self) -> tuple[str, ...]:
        return ()

    def set_identity(self, identity: MergeIdentity) -> None:
        self.identity = identity

    def clear_identity(self) -> None:
        self.identity = None


class ModuleHost(FolderHost):
    """Model files of a folder and a live model: no generation, no WebUI tab."""

    def __init__(self, folder: str, live: ModuleModel):
        super().__init__(folder)
        self.live = live


def _ordered(t: torch.Tensor) -> torch.Tensor:
    """fp16 bit patterns as integers that count ulps across zero."""
    i = t.view(torch.int16).int()
    return torch.where(i < 0, -32768 - i, i)


def assert_weighted_sum(module: torch.nn.Module, a: dict, b: dict, dtype: torch.dtype) -> None:
    """(1 - α)·A + α·B in float64, in the module's dtype (fp32 within 1e-6, fp16 within one ulp); every
    other tensor is A's."""
    live = model_tensors(module)
    assert set(live) == set(a)
    merged = set(component_keys("sd1", a))
    assert len(merged) == 1130
    for key, value in live.items():
        if key not in merged:
            assert torch.equal(value, a[key].to(value.dtype)), key
            continue
        ref = (1 - ALPHA) * a[key].double() + ALPHA * b[key].double()
        assert value.dtype == dtype, key
        if dtype == torch.float16:
            assert int((_ordered(value.detach()) - _ordered(ref.half())).abs().max()) <= 1, key
        else:
            assert ((value.detach().double() - ref).abs() <= 1e-6 * ref.abs().clamp(min=1)).all(), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_recipe_applied_to_a_module_is_the_reference_and_what_the_workbench_merges(sd1, tmp_path, dtype):
    a, b = load(sd1[0]), load(sd1[1])
    folder = tmp_path / "models"
    folder.mkdir()
    for name, src in (("model_a", sd1[0]), ("model_b", sd1[1])):
        shutil.copy(src, folder / f"{name}.safetensors")

    # The seam: no Workbench, no host; the host's names of the models resolved by a function.
    module = build_model(a, dtype)
    options = ApplyOptions()
    result = apply_recipe(RECIPE, module, resolve=lambda name: str(folder / name), options=options)
    assert_weighted_sum(module, a, b, dtype)
    assert result.patched == 1130

    # The Workbench's live merge goes through the same call and gives the same tensors.
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[1])
        return apply_recipe(*args, **kwargs)

    original = workbench_module.apply_recipe
    workbench_module.apply_recipe = spy
    try:
        live = ModuleModel(build_model(a, dtype), str(folder / "model_a.safetensors"))
        outcome = Workbench(ModuleHost(str(folder), live)).merge(MergeRequest(recipe=RECIPE))
    finally:
        workbench_module.apply_recipe = original
    assert calls == [live.module]
    assert live.identity is not None and live.identity.recipe_hash == outcome.recipe_hash
    ours, seams = model_tensors(live.module), model_tensors(module)
    assert all(torch.equal(ours[key], seams[key]) for key in seams)

    # Applied again with the same backup, the merge starts from model A; the backup gives A back.
    apply_recipe(
        RECIPE.replace(f"alpha={ALPHA}", "alpha=0.9"), module, resolve=lambda n: str(folder / n), options=options
    )
    apply_recipe(RECIPE, module, resolve=lambda name: str(folder / name), options=options)
    assert_weighted_sum(module, a, b, dtype)
    options.backup.restore(module)
    assert all(torch.equal(t, a[k].to(t.dtype)) for k, t in model_tensors(module).items())
