"""Flux: detection, the 61-slot schema, the VAE keeping A by default."""

from __future__ import annotations

import pytest
import torch
from helpers import load, metadata
from test_merge import component_keys, merge

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import BlockSchemaError
from lib_merge.io.source import SourceModel

UNET = "model.diffusion_model."


@pytest.fixture(scope="module")
def flux(models):
    return [models(f"flux_{r}", arch="flux", seed=s) for r, s in (("a", 51), ("b", 52))]


def recipe(paths, expr: str) -> str:
    return f'alloy-recipe 1\nA = model("{paths[0]}")\nB = model("{paths[1]}")\nmerged = {expr}\n'


def test_detected_and_mapped_to_61_slots(flux):
    source = SourceModel(str(flux[0]))
    try:
        assert (
            source.arch.id == "flux" and source.arch.arch.component_of("text_encoders.t5xxl.shared.weight") == "t5xxl"
        )
    finally:
        source.close()
    schema = SCHEMAS["flux"]
    assert len(schema.slots) == 61 and schema.slots[:4] == ("CLIP", "T5", "IN", "D00") and schema.slots[-1] == "OUT"
    for key, slot in (
        (UNET + "double_blocks.18.img_attn.qkv.weight", "D18"),
        (UNET + "single_blocks.37.linear2.weight", "S37"),
        (UNET + "guidance_in.in_layer.weight", "IN"),
        (UNET + "final_layer.linear.weight", "OUT"),
        ("text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight", "T5"),
        ("vae.decoder.conv_out.weight", "VAE"),
    ):
        assert schema.slot_of(key) == slot, key


def test_block_vector_and_vae_default(flux, tmp_path):
    out_path = merge(recipe(flux, 'weighted_sum(A, B, alpha=blocks("D*=1 S*=0 *=0.5"))'), tmp_path / "f.safetensors",
                     torch.float32).path  # fmt: skip
    out, a, b = load(out_path), load(flux[0]), load(flux[1])
    for key in component_keys("flux", a):
        slot = SCHEMAS["flux"].slot_of(key)
        x, y = a[key].float(), b[key].float()
        if slot == "VAE":
            assert torch.equal(out[key], x), key  # Flux's VAE keeps A unless its slot is set
        elif slot and slot.startswith("D"):
            assert torch.equal(out[key], y), key
        elif slot and slot.startswith("S"):
            assert torch.equal(out[key], x), key
        elif slot:
            torch.testing.assert_close(out[key], (x + y) / 2, rtol=1e-3, atol=1e-4)
    assert metadata(out_path)["modelspec.implementation"] == "https://github.com/black-forest-labs/flux"
    vae_set = load(merge(recipe(flux, 'weighted_sum(A, B, alpha=blocks("*=0.5 VAE=1"))'), tmp_path / "v.safetensors",
                         torch.float32).path)  # fmt: skip
    key = "vae.decoder.conv_out.weight"
    assert torch.equal(vae_set[key], b[key].float())
    with pytest.raises(BlockSchemaError, match="Adjust is defined for SD1/SD2/SDXL only"):
        merge(recipe(flux, 'adjust(weighted_sum(A, B), "1")'), tmp_path / "adj.safetensors")
