"""SD3/SD3.5 LoRAs (diffusers/PEFT and kohya names) baked into an SD3 checkpoint, and the Flux and SD3
module names of every format landing on the real checkpoints' keys (tests/../arch/data) with their shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import load
from test_cli import cli
from test_lora_flux import Lora, assert_baked, expected

from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.lora.keymap import KeyMap, Target
from lib_merge.recipe import parse_recipe

U = "model.diffusion_model."
ARCH_DATA = Path(__file__).resolve().parents[1] / "lib_merge" / "arch" / "data"
TE = "text_encoders.{}.transformer."


def shapes(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v[0]) for k, v in json.loads((ARCH_DATA / f"{name}.json").read_text()).items()}


@pytest.fixture(scope="module")
def sd3(models):
    return models("sd3_a", arch="sd3", seed=61)


def sd3_peft(base) -> Lora:
    """diffusers' SD3 names: x_block q/k/v, context q/k/v, the last block's pre-only context norm (scale,
    shift in diffusers; shift, scale in the checkpoint) and norm_out likewise."""
    lora = Lora(base)
    kw = {"down": "lora_A", "up": "lora_B"}
    last = max(int(k.split(".")[3]) for k in base if k.startswith(U + "joint_blocks."))
    h = base[U + "joint_blocks.0.x_block.attn.qkv.weight"].shape[1]
    x, ctx = U + "joint_blocks.1.x_block.attn.qkv.weight", U + "joint_blocks.1.context_block.attn.qkv.weight"
    lora.module("transformer.transformer_blocks.1.attn.to_q", x, (0, h), **kw)
    lora.module("transformer.transformer_blocks.1.attn.to_v", x, (2 * h, 3 * h), **kw)
    lora.module("transformer.transformer_blocks.1.attn.add_k_proj", ctx, (h, 2 * h), **kw)
    lora.module("transformer.transformer_blocks.1.attn.to_out.0", U + "joint_blocks.1.x_block.attn.proj.weight", **kw)
    lora.module("transformer.transformer_blocks.2.ff_context.net.2", U + "joint_blocks.2.context_block.mlp.fc2.weight",
                **kw)  # fmt: skip
    lora.module("transformer.transformer_blocks.2.norm1_context.linear",
                U + "joint_blocks.2.context_block.adaLN_modulation.1.weight", **kw)  # fmt: skip
    lora.module(f"transformer.transformer_blocks.{last}.norm1_context.linear",
                U + f"joint_blocks.{last}.context_block.adaLN_modulation.1.weight", swap=True, **kw)  # fmt: skip
    lora.module("transformer.norm_out.linear", U + "final_layer.adaLN_modulation.1.weight", swap=True, **kw)
    lora.module("transformer.time_text_embed.text_embedder.linear_1", U + "y_embedder.mlp.0.weight", alpha=1, **kw)
    return lora


def sd3_kohya(base) -> Lora:
    lora = Lora(base)
    lora.module("lora_unet_joint_blocks_0_x_block_attn_qkv", U + "joint_blocks.0.x_block.attn.qkv.weight", alpha=4)
    lora.module("lora_unet_joint_blocks_3_context_block_mlp_fc1", U + "joint_blocks.3.context_block.mlp.fc1.weight",
                alpha=0)  # fmt: skip
    lora.module("lora_te1_text_model_encoder_layers_0_mlp_fc1",
                TE.format("clip_l") + "text_model.encoder.layers.0.mlp.fc1.weight", alpha=1)  # fmt: skip
    lora.module("lora_te2_text_model_encoder_layers_1_self_attn_v_proj",
                TE.format("clip_g") + "text_model.encoder.layers.1.self_attn.v_proj.weight", alpha=1)  # fmt: skip
    lora.module("lora_te3_encoder_block_0_layer_0_SelfAttention_k",
                TE.format("t5xxl") + "encoder.block.0.layer.0.SelfAttention.k.weight", alpha=1)  # fmt: skip
    return lora


def test_sd3_peft_and_kohya_loras_bake_by_recipe_and_cli(sd3, tmp_path):
    base = load(sd3)
    diffusers, kohya = sd3_peft(base), sd3_kohya(base)
    p, k = diffusers.save(tmp_path / "p.safetensors"), kohya.save(tmp_path / "k.safetensors")
    text = f'alloy-recipe 1\nA = model("{sd3}")\nmerged = lora(lora(A, "{p}", strength=0.6), "{k}", strength=1.0)\n'
    out = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "r.safetensors"), torch.float32))
    assert_baked(load(out.path), base, expected(base, (diffusers, 0.6), (kohya, 1.0)))
    cli_out = tmp_path / "c.safetensors"
    proc = cli("lora", "bake", "--model", sd3, "--lora", f"{k}:0.3", "--dtype", "fp32", "-o", cli_out)
    assert proc.returncode == 0, proc.stderr
    assert_baked(load(cli_out), base, expected(base, (kohya, 0.3)))


def test_every_flux_diffusers_name_lands_on_its_rows_at_full_size():
    keymap = KeyMap(shapes("flux"))
    h, n = 3072, 7
    double = f"{U}double_blocks.{n}."
    want = {
        f"transformer.transformer_blocks.{n}.attn.to_v": Target(double + "img_attn.qkv.weight", (2 * h, 3 * h)),
        f"transformer.transformer_blocks.{n}.attn.add_q_proj": Target(double + "txt_attn.qkv.weight", (0, h)),
        f"transformer.transformer_blocks.{n}.ff_context.net.0.proj": Target(double + "txt_mlp.0.weight"),
        f"transformer.transformer_blocks.{n}.norm1.linear": Target(double + "img_mod.lin.weight"),
        "transformer.single_transformer_blocks.37.attn.to_q": Target(f"{U}single_blocks.37.linear1.weight", (0, h)),
        "transformer.single_transformer_blocks.0.proj_mlp": Target(
            f"{U}single_blocks.0.linear1.weight", (3 * h, 21504)
        ),
        "transformer.single_transformer_blocks.0.norm.linear": Target(f"{U}single_blocks.0.modulation.lin.weight"),
        "transformer.context_embedder": Target(f"{U}txt_in.weight"),
        "transformer.time_text_embed.timestep_embedder.linear_2": Target(f"{U}time_in.out_layer.weight"),
        "transformer.time_text_embed.text_embedder.linear_1": Target(f"{U}vector_in.in_layer.weight"),
        "transformer.norm_out.linear": Target(f"{U}final_layer.adaLN_modulation.1.weight", swap_halves=True),
        "lora_transformer_single_transformer_blocks_5_proj_out": Target(f"{U}single_blocks.5.linear2.weight"),
        "lycoris_transformer_blocks_0_attn_to_k": Target(f"{U}double_blocks.0.img_attn.qkv.weight", (h, 2 * h)),
        "diffusion_model.double_blocks.3.img_attn.proj": Target(f"{U}double_blocks.3.img_attn.proj.weight"),
        "lora_unet_single_blocks_9_linear1.3": Target(f"{U}single_blocks.9.linear1.weight", (3 * h, 21504)),
        "lora_unet_double_blocks_9_txt_attn_qkv.1": Target(
            double.replace(".7.", ".9.") + "txt_attn.qkv.weight", (h, 2 * h)
        ),  # fmt: skip
        "lora_te2_encoder_block_23_layer_1_DenseReluDense_wo": Target(
            TE.format("t5xxl") + "encoder.block.23.layer.1.DenseReluDense.wo.weight"
        ),
        "text_encoder.text_model.encoder.layers.11.self_attn.out_proj": Target(
            TE.format("clip_l") + "text_model.encoder.layers.11.self_attn.out_proj.weight"
        ),
    }
    assert {name: keymap.target(name) for name in want} == want
    assert keymap.target("lora_unet_double_blocks_0_img_attn_qkv.3") is None  # qkv has three parts only


@pytest.mark.parametrize("data, h", [("sd3", 1536), ("sd35_medium", 1536), ("sd35_large", 2432)])
def test_sd3_diffusers_names_land_on_their_rows_for_each_sd3_model(data, h):
    table = shapes(data)
    keymap = KeyMap(table)
    last = max(int(k.split(".")[3]) for k in table if k.startswith(U + "joint_blocks."))
    j = f"{U}joint_blocks.0."
    want = {
        "transformer.transformer_blocks.0.attn.to_k": Target(j + "x_block.attn.qkv.weight", (h, 2 * h)),
        "transformer.transformer_blocks.0.attn.add_v_proj": Target(j + "context_block.attn.qkv.weight", (2 * h, 3 * h)),
        "transformer.transformer_blocks.0.attn.to_add_out": Target(j + "context_block.attn.proj.weight"),
        "transformer.transformer_blocks.0.ff.net.0.proj": Target(j + "x_block.mlp.fc1.weight"),
        "transformer.transformer_blocks.0.norm1_context.linear": Target(j + "context_block.adaLN_modulation.1.weight"),
        f"transformer.transformer_blocks.{last}.norm1_context.linear": Target(
            f"{U}joint_blocks.{last}.context_block.adaLN_modulation.1.weight", swap_halves=True
        ),
        "transformer.pos_embed.proj": Target(f"{U}x_embedder.proj.weight"),
        "transformer.time_text_embed.timestep_embedder.linear_1": Target(f"{U}t_embedder.mlp.0.weight"),
        "lora_unet_joint_blocks_0_x_block_attn_qkv.2": Target(j + "x_block.attn.qkv.weight", (2 * h, 3 * h)),
        "text_encoder_2.text_model.encoder.layers.0.mlp.fc2": Target(
            TE.format("clip_g") + "text_model.encoder.layers.0.mlp.fc2.weight"
        ),
        "text_encoder_3.encoder.block.0.layer.0.SelfAttention.q": Target(
            TE.format("t5xxl") + "encoder.block.0.layer.0.SelfAttention.q.weight"
        ),
    }
    if data == "sd35_medium":  # SD3.5 medium's second attention in its first blocks
        want["transformer.transformer_blocks.0.attn2.to_v"] = Target(j + "x_block.attn2.qkv.weight", (2 * h, 3 * h))
        want["transformer.transformer_blocks.0.attn2.to_out.0"] = Target(j + "x_block.attn2.proj.weight")
    assert {name: keymap.target(name) for name in want} == want
    assert all(t.key in table and table[t.key][0] >= (t.rows or (0, 0))[1] for t in want.values())


def test_the_base_a_transformer_lora_looks_made_for():
    from lib_merge.lora.file import LoraFile
    from lib_merge.lora.formats import LoraModule

    def base(*modules: tuple[str, int]) -> str | None:
        parts = {n: LoraModule(n, {"down": torch.zeros(2, w), "up": torch.zeros(w, 2)}) for n, w in modules}
        return LoraFile("x.safetensors", parts).likely_base()

    assert base(("transformer.transformer_blocks.0.attn.to_q", 3072)) == "flux"
    assert base(("transformer.transformer_blocks.0.attn.to_q", 1536)) == "sd3"
    assert base(("transformer.transformer_blocks.0.attn.to_q", 2432)) == "sd35_large"
    assert base(("lora_unet_joint_blocks_30_x_block_mlp_fc1", 2432)) == "sd35_large"
    assert (
        base(("lora_unet_double_blocks_0_img_attn_qkv", 3072), ("lora_te1_text_model_encoder_layers_0_mlp_fc1", 768))
        == "flux"
    )
    assert base(("lora_te3_encoder_block_0_layer_0_SelfAttention_q", 4096)) == "flux"
    assert base(("lora_te3_encoder_block_0_layer_0_SelfAttention_q", 4096),
                ("lora_te2_text_model_encoder_layers_0_mlp_fc1", 1280)) == "sd3"  # fmt: skip


@pytest.mark.parametrize("data, arch", [("flux", "flux"), ("sd3", "sd3"), ("sd35_large", "sd35_large")])
def test_extraction_names_flux_and_sd3_modules_and_their_clip_encoders_and_they_map_back(data, arch):
    from lib_merge.lora.names import module_targets

    table = shapes(data)
    keymap = KeyMap(table)
    targets = module_targets(table, arch)
    assert targets and all(keymap.target(t.name) == t.target for t in targets)
    encoders = {t.text_encoder for t in targets} - {None}
    assert encoders == ({"te1"} if arch == "flux" else {"te1", "te2"})  # CLIP-L (and CLIP-G); no T5, as kohya
    block = "double_blocks_0_img_attn_qkv" if arch == "flux" else "joint_blocks_0_context_block_attn_qkv"
    assert f"lora_unet_{block}" in {t.name for t in targets}
