"""Weighted sum of fp16/bf16 inputs into fp32 outputs (a live merge into fp32 parameters, a file merge
saved as fp32): the chunked widening kernel, compiled by TorchScript or run as plain Python, against
torch's fp32 lerp of the widened inputs computed here."""

from __future__ import annotations

import pytest
import torch
from helpers import build_model, load
from test_merge import merge, recipe

from lib_merge.engine.live import LiveBackup, merge_into_model, model_tensors
from lib_merge.methods import widening
from lib_merge.methods.classic import weighted_sum_into
from lib_merge.recipe import parse_recipe


@pytest.fixture(params=["compiled", "plain"])
def kernel(request, monkeypatch) -> str:
    if request.param == "plain":  # as where torch has no TorchScript
        monkeypatch.setattr(widening, "compiled", lambda fn: fn)
    monkeypatch.setattr(widening, "WIDENING_CHUNK", 1000)  # many chunks per key, and a short last one
    return request.param


def expected_lerp(a: dict, b: dict, alpha: float) -> dict[str, torch.Tensor]:
    return {k: a[k].float().lerp(b[k].float(), alpha) for k in a if a[k].is_floating_point()}


def test_the_kernel_is_compiled_where_torch_has_torchscript():
    assert isinstance(widening.compiled(widening.lerp_widening), torch.jit.ScriptFunction)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.75])
def test_a_live_merge_into_fp32_parameters_is_the_fp32_lerp_of_the_widened_inputs(sd1, kernel, alpha):
    model = build_model(load(sd1[0]), torch.float32)
    result = merge_into_model(parse_recipe(recipe("weighted_sum", sd1[:2], alpha=alpha)), model, LiveBackup())
    expected = expected_lerp(load(sd1[0]), load(sd1[1]), alpha)
    live = model_tensors(model)
    assert max(t.numel() for t in expected.values()) > 3 * widening.WIDENING_CHUNK
    assert result.patched == len(expected)
    for key, tensor in expected.items():
        assert live[key].dtype == torch.float32
        assert torch.equal(live[key], tensor), key


def test_an_fp32_file_merge_of_fp16_models_is_the_same_lerp(sd1, tmp_path, kernel):
    saved = load(merge(recipe("weighted_sum", sd1[:2], alpha=0.65), tmp_path / "m.safetensors", torch.float32).path)
    expected = expected_lerp(load(sd1[0]), load(sd1[1]), 0.65)
    for key, tensor in expected.items():
        assert saved[key].dtype == torch.float32
        assert torch.equal(saved[key], tensor), key


def test_bf16_inputs_stored_in_another_shape_of_the_same_size(kernel):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 80, generator=generator).bfloat16()
    b = torch.randn(5120, generator=generator).bfloat16()
    out = torch.empty(64, 80, 1, 1)
    weighted_sum_into(a, b, alpha=0.42, out=out)
    assert torch.equal(out.view(-1), a.float().view(-1).lerp(b.float(), 0.42))
