"""LoRA module names land on the right checkpoint keys: every module a kohya LoRA of SD1 or SDXL can
have (the diffusers/kohya names of the real models, tests/data) maps to a key of the real key lists
with the module's own shape; OpenCLIP q/k/v land on row slices of in_proj."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib_merge.lora.keymap import KeyMap, Target, kohya_name

ARCH_DATA = Path(__file__).resolve().parents[1] / "lib_merge" / "arch" / "data"
DATA = Path(__file__).resolve().parent / "data"


def shapes(arch: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v[0]) for k, v in json.loads((ARCH_DATA / f"{arch}.json").read_text()).items()}


def modules(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """Linear and conv modules of the diffusers/kohya layout, as kohya names them. OpenCLIP-G's
    text_projection is left out: the checkpoint holds it as a bare, transposed parameter and kohya
    trains no LoRA on it."""
    rows = [line.split("\t") for line in (DATA / name).read_text().splitlines() if line]
    return [(m, tuple(int(x) for x in shape.split("x"))) for m, shape in rows if not m.endswith("text_projection")]


def target_shape(keymap: KeyMap, target: Target) -> tuple[int, ...]:
    shape = keymap.shapes[target.key]
    if target.rows is None:
        return shape
    start, end = target.rows
    return (end - start, *shape[1:])


@pytest.mark.parametrize("arch, listing", [("sd1", "kohya_sd1_modules.txt"), ("sdxl", "kohya_sdxl_modules.txt")])
def test_every_kohya_module_maps_to_a_key_of_its_shape(arch, listing):
    keymap = KeyMap(shapes(arch))
    wanted = modules(listing)
    missing = [name for name, _ in wanted if keymap.target(name) is None]
    assert not missing, missing[:10]
    wrong = [
        (name, shape, target_shape(keymap, keymap.target(name)))
        for name, shape in wanted
        if target_shape(keymap, keymap.target(name))[:2] != shape[:2]
    ]
    assert not wrong, wrong[:10]
    targets = [keymap.target(name) for name, _ in wanted]
    assert len(set(targets)) == len(targets)  # no two modules land on the same weight (or slice)


def test_known_landmarks_of_the_diffusers_to_ldm_mapping():
    keymap = KeyMap(shapes("sd1"))
    expect = {
        "lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k":
            "model.diffusion_model.input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight",
        "lora_unet_down_blocks_2_downsamplers_0_conv": "model.diffusion_model.input_blocks.9.0.op.weight",
        "lora_unet_mid_block_resnets_1_conv2": "model.diffusion_model.middle_block.2.out_layers.3.weight",
        "lora_unet_up_blocks_0_upsamplers_0_conv": "model.diffusion_model.output_blocks.2.1.conv.weight",
        "lora_unet_up_blocks_1_upsamplers_0_conv": "model.diffusion_model.output_blocks.5.2.conv.weight",
        "lora_unet_up_blocks_3_resnets_2_conv_shortcut":
            "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
        "lora_te_text_model_encoder_layers_11_mlp_fc2":
            "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
        "unet.up_blocks.2.attentions.0.transformer_blocks.0.ff.net.0.proj":
            "model.diffusion_model.output_blocks.6.1.transformer_blocks.0.ff.net.0.proj.weight",
    }  # fmt: skip
    for name, key in expect.items():
        assert keymap.target(name) == Target(key), name
    assert keymap.target("lora_unet_nothing_like_this") is None
    assert kohya_name("base_model.model.unet.conv_in") == "lora_unet_conv_in"


@pytest.mark.parametrize("arch, prefix, base, width", [
    ("sd2", "lora_te_", "cond_stage_model.model.transformer.resblocks", 1024),
    ("sdxl", "lora_te2_", "conditioner.embedders.1.model.transformer.resblocks", 1280),
])  # fmt: skip
def test_openclip_q_k_v_are_row_slices_of_in_proj(arch, prefix, base, width):
    keymap = KeyMap(shapes(arch))
    for index, part in enumerate("qkv"):
        target = keymap.target(f"{prefix}text_model_encoder_layers_3_self_attn_{part}_proj")
        assert target == Target(f"{base}.3.attn.in_proj_weight", (index * width, (index + 1) * width))
        assert target.bias_key == f"{base}.3.attn.in_proj_bias" and target.bias_key in keymap.shapes
    assert keymap.target(f"{prefix}text_model_encoder_layers_3_mlp_fc1") == Target(f"{base}.3.mlp.c_fc.weight")
    assert keymap.target(f"{prefix}text_model_encoder_layers_3_self_attn_out_proj") == Target(
        f"{base}.3.attn.out_proj.weight"
    )


def test_sd2_unet_names_are_sd1s():
    keymap = KeyMap(shapes("sd2"))
    unet = [name for name, _ in modules("kohya_sd1_modules.txt") if name.startswith("lora_unet_")]
    assert all(keymap.target(name) is not None for name in unet)


@pytest.mark.parametrize("arch, listing", [("sd1", "kohya_sd1_modules.txt"), ("sd2", None),
                                           ("sdxl", "kohya_sdxl_modules.txt"), ("flux", None)])  # fmt: skip
def test_the_names_alloy_writes_are_kohyas_and_map_back_to_their_keys(arch, listing):
    from lib_merge.lora.names import module_targets

    keymap = KeyMap(shapes(arch))
    targets = module_targets(keymap.shapes, arch)
    assert targets and all(keymap.target(t.name) == t.target for t in targets)
    if listing:
        real = {name for name, _ in modules(listing)}
        written = {t.name for t in targets}
        # every module Alloy extracts is one kohya trains; kohya's extra ones are conv_in/out, time and label embeddings
        assert written <= real
        outside_blocks = ("conv_in", "conv_out", "time_emb", "label_emb", "input_blocks_0_0", "out_2")
        assert all(any(part in n for part in outside_blocks) for n in real - written), sorted(real - written)


def test_flux_diffusers_names_are_row_slices_of_the_fused_weights():
    keymap = KeyMap(shapes("flux"))
    unet = "model.diffusion_model."
    assert keymap.target("transformer.transformer_blocks.2.attn.to_k") == Target(
        f"{unet}double_blocks.2.img_attn.qkv.weight", (3072, 6144)
    )
    assert keymap.target("transformer.transformer_blocks.2.attn.add_v_proj") == Target(
        f"{unet}double_blocks.2.txt_attn.qkv.weight", (6144, 9216)
    )
    assert keymap.target("transformer.single_transformer_blocks.5.proj_mlp") == Target(
        f"{unet}single_blocks.5.linear1.weight", (9216, 21504)
    )
    assert keymap.target("lora_transformer_single_transformer_blocks_5_proj_out") == Target(
        f"{unet}single_blocks.5.linear2.weight"
    )
    assert keymap.target("lora_unet_double_blocks_0_img_mod_lin") == Target(f"{unet}double_blocks.0.img_mod.lin.weight")
