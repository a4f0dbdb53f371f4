"""Architecture detection, components and the key -> block maps."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from lib_merge.arch.blocks import schema_for
from lib_merge.arch.detect import detect
from lib_merge.arch.registry import ARCHITECTURES
from lib_merge.io import save_state_dict
from lib_merge.io.source import SourceModel
from lib_merge.io.synth import SynthSpec, synth_shapes


def _full_shapes(arch_id: str) -> dict[str, tuple[int, ...]]:
    return {k: shape for k, (shape, _) in ARCHITECTURES[arch_id].keys.items()}


def _mini_shapes(**spec) -> dict[str, tuple[int, ...]]:
    return {k: s for k, (s, _) in synth_shapes(SynthSpec(**spec)).items()}


@pytest.mark.parametrize("arch_id", ["sd1", "sd2", "sdxl"])
def test_full_and_miniature_headers_detect_alike(arch_id):
    full = detect(_full_shapes(arch_id))
    mini = detect(_mini_shapes(arch=arch_id, scale=32))
    assert full.id == mini.id == arch_id
    assert full.variant == mini.variant == ""
    assert full.components_found == mini.components_found
    assert not full.components_missing


@pytest.mark.parametrize(
    "arch_id, channels, variant",
    [
        ("sd1", 9, "inpainting"),
        ("sd1", 8, "pix2pix"),
        ("sd2", 9, "inpainting"),
        ("sd2", 5, "depth"),
        ("sdxl", 9, "inpainting"),
    ],
)
def test_variants_from_input_channels(arch_id, channels, variant):
    info = detect(_mini_shapes(arch=arch_id, input_channels=channels))
    assert (info.id, info.variant, info.input_channels) == (arch_id, variant, channels)


def test_sd1_and_sd2_tell_apart_by_rank_and_report_why():
    info = detect(_mini_shapes(arch="sd2"))
    assert info.id == "sd2"
    assert any(r.startswith("sd1: rank mismatch at model.diffusion_model.") for r in info.rejected)


def test_unet_only_file_is_still_its_architecture():
    info = detect(_mini_shapes(arch="sdxl", components=("unet",)))
    assert info.id == "sdxl"
    assert sorted(info.components_missing) == ["clip_g", "clip_l", "vae"]


def test_refiner_is_detected_from_its_keys():
    shapes = {
        "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight": (96, 32),
        "model.diffusion_model.input_blocks.0.0.weight": (12, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (48, 80),
        "model.diffusion_model.time_embed.0.weight": (48, 12),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (48, 40),
        "model.diffusion_model.output_blocks.0.0.in_layers.2.weight": (48, 96, 3, 3),
        "model.diffusion_model.out.2.weight": (4, 12, 3, 3),
    }
    assert detect(shapes).id == "sdxl_refiner"
    assert detect({k: v for k, v in shapes.items() if "conditioner" not in k}).id == "unknown"


def test_unknown_architecture():
    info = detect({"some.weight": (3, 3)})
    assert info.id == "unknown" and len(info.rejected) == len(ARCHITECTURES)


def test_prediction_markers_and_metadata():
    shapes = _mini_shapes(arch="sdxl", markers=True)
    assert detect(shapes).prediction == "edm_v"
    no_edm = {k: v for k, v in shapes.items() if not k.startswith("edm_vpred")}
    assert detect(no_edm).prediction == "v_ztsnr"
    plain = _mini_shapes(arch="sdxl")
    assert detect(plain, {"modelspec.prediction_type": "v"}).prediction == "v"
    assert detect(plain).prediction == "epsilon"


def test_sidecar_yaml_sets_v_prediction(tmp_path, models):
    path = tmp_path / "sd2v.safetensors"
    path.write_bytes(models("sd2_plain", arch="sd2").read_bytes())
    (tmp_path / "sd2v.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert SourceModel(str(path)).arch.prediction == "v"


def test_nai_clip_alias_read_under_canonical_names(models):
    m = SourceModel(str(models("nai", arch="sd1", nai_clip=True)))
    assert m.arch.id == "sd1"
    assert len(m.arch.aliases) == 197  # every CLIP key, position_ids included
    key = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    assert key in m and m.read(key).shape == m.info(key).shape


def test_component_prefixes_cover_every_architecture_key():
    for arch_id in ("sd1", "sd2", "sdxl"):
        arch = ARCHITECTURES[arch_id]
        loose = [k for k in arch.keys if arch.component_of(k) is None]
        assert all(k.startswith("model_ema.") or "." not in k or k.startswith("edm_vpred") for k in loose), loose[:5]


# Independent derivation of the block sizes from the UNet structure: a resnet block has 10
# tensors (+2 with a skip conv); a spatial transformer has norm, proj_in, proj_out (6) plus
# 20 per transformer block; a down/upsampler conv has 2; conv_in 2; time_embed 4; label_emb 4.
RES, SKIP, SAMPLER = 10, 2, 2


def attn(depth: int) -> int:
    return 6 + 20 * depth


SD1_EXPECTED = {
    "IN00": 2 + 4,
    "IN01": RES + attn(1),
    "IN02": RES + attn(1),
    "IN03": SAMPLER,
    "IN04": RES + SKIP + attn(1),
    "IN05": RES + attn(1),
    "IN06": SAMPLER,
    "IN07": RES + SKIP + attn(1),
    "IN08": RES + attn(1),
    "IN09": SAMPLER,
    "IN10": RES,
    "IN11": RES,
    "M00": 2 * RES + attn(1),
    "OUT00": RES + SKIP,
    "OUT01": RES + SKIP,
    "OUT02": RES + SKIP + SAMPLER,
    **{f"OUT{i:02d}": RES + SKIP + attn(1) for i in range(3, 12)},
}
SD1_EXPECTED["OUT05"] += SAMPLER
SD1_EXPECTED["OUT08"] += SAMPLER
SD1_EXPECTED["OUT11"] += 4  # out.0 norm and out.2 conv

SDXL_EXPECTED = {
    "IN00": 2 + 4 + 4,
    "IN01": RES,
    "IN02": RES,
    "IN03": SAMPLER,
    "IN04": RES + SKIP + attn(2),
    "IN05": RES + attn(2),
    "IN06": SAMPLER,
    "IN07": RES + SKIP + attn(10),
    "IN08": RES + attn(10),
    "M00": 2 * RES + attn(10),
    "OUT00": RES + SKIP + attn(10),
    "OUT01": RES + SKIP + attn(10),
    "OUT02": RES + SKIP + attn(10) + SAMPLER,
    "OUT03": RES + SKIP + attn(2),
    "OUT04": RES + SKIP + attn(2),
    "OUT05": RES + SKIP + attn(2) + SAMPLER,
    "OUT06": RES + SKIP,
    "OUT07": RES + SKIP,
    "OUT08": RES + SKIP + 4,
}


@pytest.mark.parametrize(
    "arch_id, unet, text_keys",
    [("sd1", SD1_EXPECTED, 197), ("sdxl", SDXL_EXPECTED, 197 + 390)],
)
def test_every_key_maps_to_its_block(arch_id, unet, text_keys):
    arch = ARCHITECTURES[arch_id]
    schema = schema_for(arch_id)
    counts = Counter(schema.slot_of(k) for k in arch.keys if arch.component_of(k))
    assert {s: counts[s] for s in unet} == unet
    assert counts["BASE"] == text_keys
    assert counts["VAE"] == 248
    assert None not in counts
    assert set(counts) == set(schema.slots) | {"VAE"}


def test_schema_examples():
    sd1, sdxl = schema_for("sd1"), schema_for("sdxl")
    assert len(sd1) == 26 and len(sdxl) == 20
    assert schema_for("sd2") is sd1 and schema_for("sdxl_refiner") is sdxl
    u = "model.diffusion_model."
    assert sd1.slot_of(u + "time_embed.0.weight") == "IN00"
    assert sd1.slot_of(u + "out.2.bias") == "OUT11"
    assert sdxl.slot_of(u + "out.2.bias") == "OUT08"
    assert sdxl.slot_of(u + "label_emb.0.0.weight") == "IN00"
    assert sdxl.slot_of(u + "middle_block.1.transformer_blocks.7.ff.net.2.weight") == "M00"
    assert sdxl.slot_of(u + "output_blocks.2.2.conv.weight") == "OUT02"
    assert sdxl.slot_of("first_stage_model.decoder.conv_in.weight") == "VAE"


def test_miniature_file_round_trip_detects(tmp_path):
    shapes = synth_shapes(SynthSpec(arch="sdxl", components=("unet",)))
    tensors = {k: torch.zeros(s, dtype=dt) for k, (s, dt) in shapes.items()}
    save_state_dict(str(tmp_path / "u.safetensors"), tensors)
    assert SourceModel(str(tmp_path / "u.safetensors")).arch.id == "sdxl"
