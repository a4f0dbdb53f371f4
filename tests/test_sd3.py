"""SD3 medium, SD3.5 medium and SD3.5 large: detection, components, the joint-block schema, merges."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import load, metadata

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.arch.registry import is_mergeable
from lib_merge.io.source import SourceModel

U = "model.diffusion_model."


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib_merge", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def sd3(models):
    return {
        "medium": models("sd3_m", arch="sd3", scale=32, seed=81),
        "3.5-medium": models("sd35_m", arch="sd3", variant="3.5-medium", scale=32, seed=82),
        "large": [models(f"sd35_l{i}", arch="sd35_large", scale=32, seed=83 + i, dtype=torch.float32) for i in (0, 1)],
    }


def test_each_sd3_is_told_apart_with_its_components(sd3):
    expected = {
        "medium": ("sd3", "SD3 medium", 24),
        "3.5-medium": ("sd3", "SD3.5 medium", 24),
        "large": ("sd35_large", "SD3.5 large", 38),
    }
    for name, (arch_id, label, blocks) in expected.items():
        path = sd3[name][0] if name == "large" else sd3[name]
        source = SourceModel(str(path))
        try:
            assert (source.arch.id, source.arch.label) == (arch_id, label), name
            assert set(source.arch.components_found) == {"diffuser", "clip_l", "clip_g", "t5xxl", "vae"}
            joint = {int(k.split(".")[3]) for k in source.keys if k.startswith(U + "joint_blocks.")}
            assert joint == set(range(blocks))
            schema = SCHEMAS[source.arch.arch.schema_id]
            assert len(schema) == blocks + 5
            for key in source.keys:  # every key of the diffuser and the encoders has its slot
                if source.arch.arch.component_of(key) not in (None, "vae"):
                    assert schema.slot_of(key) in schema.slots, key
        finally:
            source.close()
    schema = SCHEMAS["sd3"]
    for key, slot in (
        (U + "joint_blocks.0.x_block.attn2.qkv.weight", "J00"),
        (U + "joint_blocks.23.context_block.attn.qkv.weight", "J23"),
        (U + "pos_embed", "IN"),
        (U + "y_embedder.mlp.0.weight", "IN"),
        (U + "final_layer.linear.weight", "OUT"),
        ("text_encoders.clip_g.transformer.text_model.final_layer_norm.weight", "CLIPG"),
        ("text_encoders.t5xxl.transformer.encoder.final_layer_norm.weight", "T5"),
        ("first_stage_model.decoder.conv_in.weight", "VAE"),
    ):
        assert schema.slot_of(key) == slot, key


def test_sd35_large_merge_by_joint_blocks(sd3, tmp_path):
    a_path, b_path = sd3["large"]
    out = tmp_path / "l.safetensors"
    result = cli("merge", "--a", a_path, "--b", b_path, "--blocks", "J0-J9=1 J37=0 T5=0.2 *=0.5",
                 "--dtype", "fp32", "-o", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    a, b, got = load(a_path), load(b_path), load(out)
    schema = SCHEMAS["sd35_large"]
    for key, t in a.items():
        slot = schema.slot_of(key)
        if slot is None or not is_mergeable(key, t.dtype):
            continue
        if slot == "VAE":
            assert torch.equal(got[key], t), key  # the VAE keeps A unless its slot is set
            continue
        index = int(slot[1:]) if slot.startswith("J") else None
        alpha = 1.0 if index is not None and index <= 9 else 0.0 if slot == "J37" else 0.2 if slot == "T5" else 0.5
        reference = ((1 - alpha) * t.double() + alpha * b[key].double()).float()
        torch.testing.assert_close(got[key], reference, rtol=0, atol=1e-6)
    assert metadata(out)["modelspec.architecture"] == "stable-diffusion-v3.5-large"


def test_sd3_and_sd35_medium_differ_in_shape_and_are_refused_before_reading(sd3, tmp_path):
    out = tmp_path / "x.safetensors"
    result = cli("merge", "--a", sd3["medium"], "--b", sd3["3.5-medium"], "-o", out)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "SD3 medium" in result.stderr and "SD3.5 medium" in result.stderr and "differ in shape" in result.stderr
    assert list(tmp_path.iterdir()) == []
    mixed = cli("merge", "--a", sd3["medium"], "--b", sd3["large"][0], "-o", out)
    assert mixed.returncode != 0 and "SD3.5 large" in mixed.stderr and "SD3 medium" in mixed.stderr
