"""Checkpoint keys → the kohya module names a LoRA written by Alloy uses, and which modules an
extraction targets.

The names are the inverse of lora/keymap.py: SD1/SD2 UNets in diffusers block names
(`lora_unet_down_blocks_0_attentions_0_…`), SDXL in the checkpoint's own block names
(`lora_unet_input_blocks_4_1_…`), Flux in its block names, text encoders as `lora_te_` (SD1, SD2),
`lora_te1_`/`lora_te2_` (SDXL; Flux's CLIP-L, SD3's CLIP-L and CLIP-G); q/k/v of OpenCLIP's fused in_proj
weight as row slices; the Flux and SD3 transformers' block linears in their own names. The
round trip name → KeyMap → key is tested for every target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lib_merge.lora.keymap import UNET, Target

_RESNET_NAMES = {
    "in_layers.2": "conv1",
    "out_layers.3": "conv2",
    "emb_layers.1": "time_emb_proj",
    "skip_connection": "conv_shortcut",
}
_QKV_NAMES = ("q_proj", "k_proj", "v_proj")
_OPENCLIP_NAMES = {"attn.out_proj": "self_attn_out_proj", "mlp.c_fc": "mlp_fc1", "mlp.c_proj": "mlp_fc2"}
_CLIP = {
    "cond_stage_model.transformer.text_model.encoder.layers.": "lora_te_text_model_encoder_layers_",
    "conditioner.embedders.0.transformer.text_model.encoder.layers.": "lora_te1_text_model_encoder_layers_",
    # Flux and SD3 (kohya's lora_flux.py / lora_sd3.py); their T5 is not extracted, as kohya trains none by default
    "text_encoders.clip_l.transformer.text_model.encoder.layers.": "lora_te1_text_model_encoder_layers_",
    "text_encoders.clip_g.transformer.text_model.encoder.layers.": "lora_te2_text_model_encoder_layers_",
}
_OPENCLIP = {
    "cond_stage_model.model.transformer.resblocks.": "lora_te_text_model_encoder_layers_",
    "conditioner.embedders.1.model.transformer.resblocks.": "lora_te2_text_model_encoder_layers_",
}
_CLIP_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
_UNET_BLOCK = re.compile(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.+)$|middle_block\.(\d+)\.(.+)$")
_DIT_BLOCK = re.compile(r"(double_blocks|single_blocks|joint_blocks)\.\d+\.")  # Flux, Chroma; SD3, SD3.5


@dataclass(frozen=True)
class ModuleTarget:
    """One module a LoRA may hold: its kohya name, the checkpoint weight (or row slice) it changes,
    and whether it is a spatial convolution (which takes the conv rank)."""

    name: str
    target: Target
    spatial: bool = False
    text_encoder: str | None = None  # "te", "te1", "te2" for text-encoder modules


def unet_lora_name(rest: str, diffusers: bool) -> str | None:
    """`input_blocks.4.1.proj_in` (after model.diffusion_model., without .weight) → the kohya name
    after `lora_unet_`; None for a part no LoRA names."""
    if not diffusers:
        return rest.replace(".", "_")
    m = _UNET_BLOCK.match(rest)
    if not m:
        return None
    side, index, part, tail, mid_index, mid_tail = m.groups()
    if side is None:
        if mid_index == "1":
            return "mid_block_attentions_0_" + mid_tail.replace(".", "_")
        resnet = _RESNET_NAMES.get(mid_tail)
        return f"mid_block_resnets_{int(mid_index) // 2}_{resnet}" if resnet else None
    n = int(index)
    if side == "input_blocks":
        if n == 0:
            return None
        level, j = divmod(n - 1, 3)
        if j == 2:  # input_blocks.3/6/9: the downsampler
            return f"down_blocks_{level}_downsamplers_0_conv" if tail == "op" else None
        prefix = f"down_blocks_{level}"
    else:
        level, j = divmod(n, 3)
        if tail == "conv" and part in ("1", "2"):
            return f"up_blocks_{level}_upsamplers_0_conv"
        prefix = f"up_blocks_{level}"
    if part == "0":
        resnet = _RESNET_NAMES.get(tail)
        return f"{prefix}_resnets_{j}_{resnet}" if resnet else None
    return f"{prefix}_attentions_{j}_" + tail.replace(".", "_")


def module_targets(shapes: Mapping[str, tuple[int, ...]], arch_id: str) -> list[ModuleTarget]:
    """The modules of a checkpoint that a LoRA extraction targets: the UNet's (or Flux's) linears and
    convolutions inside its blocks, and the text encoders' attention and MLP linears."""
    targets: list[ModuleTarget] = []
    for key, shape in shapes.items():
        if not key.endswith("weight") or len(shape) not in (2, 4):
            continue
        if key.startswith(UNET):
            targets.extend(_unet_target(key, shape, arch_id))
        else:
            targets.extend(_text_targets(key, shape))
    return targets


def _unet_target(key: str, shape: tuple[int, ...], arch_id: str) -> list[ModuleTarget]:
    rest = key[len(UNET) : -len(".weight")]
    if arch_id not in ("sd1", "sd2", "sdxl", "sdxl_refiner"):
        if not _DIT_BLOCK.match(rest):
            return []
        return [ModuleTarget("lora_unet_" + rest.replace(".", "_"), Target(key))]
    if not _UNET_BLOCK.match(rest) or rest.startswith("input_blocks.0."):
        return []
    name = unet_lora_name(rest, diffusers=arch_id in ("sd1", "sd2"))
    if name is None:
        return []
    spatial = len(shape) == 4 and shape[2] * shape[3] > 1
    return [ModuleTarget("lora_unet_" + name, Target(key), spatial)]


def _text_targets(key: str, shape: tuple[int, ...]) -> list[ModuleTarget]:
    for prefix, lora_prefix in _CLIP.items():
        if key.startswith(prefix):
            layer, _, part = key[len(prefix) : -len(".weight")].partition(".")
            if part in _CLIP_PARTS:
                te = lora_prefix.split("_")[1]
                return [ModuleTarget(f"{lora_prefix}{layer}_{part.replace('.', '_')}", Target(key), text_encoder=te)]
            return []
    for prefix, lora_prefix in _OPENCLIP.items():
        if key.startswith(prefix):
            te = lora_prefix.split("_")[1]
            layer, _, part = key[len(prefix) :].partition(".")
            if part == "attn.in_proj_weight":
                width = shape[0] // 3
                return [
                    ModuleTarget(
                        f"{lora_prefix}{layer}_self_attn_{qkv}",
                        Target(key, (i * width, (i + 1) * width)),
                        text_encoder=te,
                    )
                    for i, qkv in enumerate(_QKV_NAMES)
                ]
            part = part[: -len(".weight")]
            if part in _OPENCLIP_NAMES:
                return [ModuleTarget(f"{lora_prefix}{layer}_{_OPENCLIP_NAMES[part]}", Target(key), text_encoder=te)]
    return []


def target_names(shapes: Mapping[str, tuple[int, ...]], arch_id: str) -> dict[Target, ModuleTarget]:
    """Every nameable module by the checkpoint weight (or slice) it changes."""
    return {t.target: t for t in module_targets(shapes, arch_id)}
