"""LoRA module names → checkpoint keys, for SD1, SD2, SDXL, Flux and SD3 (kohya, diffusers-style and PEFT names).

The checkpoint's own keys are the index: a module's key with every "." turned into "_" is what a
kohya name says after its prefix, once diffusers block names are turned into the checkpoint's
(down_blocks → input_blocks, resnet parts → in_layers/out_layers, …; docs/FORMULAS.md §10; the Flux
and SD3 transformers in lora/dit.py). OpenCLIP text encoders (SD2, SDXL's second) keep q, k and v in one
in_proj weight: those modules map to a row slice of it, as do kohya's split q/k/v parts of a fused qkv.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from lib_merge.lora.dit import dit_targets, split_part
from lib_merge.lora.target import UNET, Target

__all__ = ["UNET", "KeyMap", "Target", "kohya_name", "unet_names"]
_RESNET_PARTS = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
    "norm1": "in_layers_0",
    "norm2": "out_layers_0",
}
_UNET_SINGLE = {
    "conv_in": "input_blocks_0_0",
    "conv_out": "out_2",
    "conv_norm_out": "out_0",
    "time_embedding_linear_1": "time_embed_0",
    "time_embedding_linear_2": "time_embed_2",
}
# Text encoders in CLIP naming: prefix of the LoRA name → the checkpoint's module prefixes (underscored).
# Flux and SD3 keep theirs under text_encoders.*: kohya's te1 is CLIP-L there, te2 SD3's CLIP-G.
_CLIP_TE = {
    "lora_te_": ("cond_stage_model_transformer_", "text_encoders_clip_l_transformer_"),
    "lora_te1_": ("conditioner_embedders_0_transformer_", "text_encoders_clip_l_transformer_"),
    "lora_te2_": ("text_encoders_clip_g_transformer_",),
}
# T5-XXL (Flux, SD3): kohya writes lora_te3_ (lora_te2_ in its first Flux versions and OneTrainer's Flux
# files), diffusers text_encoder_2 (Flux) or text_encoder_3 (SD3); the names after it are T5's own.
_T5_TE = ("lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")
_T5 = "text_encoders_t5xxl_transformer_"
_SPLIT = re.compile(r"(lora_\w+)\.(\d+)$")  # kohya split_qkv: one module per part of a fused weight
# OpenCLIP text encoders: prefix of the LoRA name → the checkpoint's prefix (dotted)
_OPENCLIP_TE = {
    "lora_te_": "cond_stage_model.model.transformer.resblocks.",
    "lora_te2_": "conditioner.embedders.1.model.transformer.resblocks.",
}
_OPENCLIP_PART = {"self_attn_out_proj": "attn.out_proj", "mlp_fc1": "mlp.c_fc", "mlp_fc2": "mlp.c_proj"}
_QKV = {"self_attn_q_proj": 0, "self_attn_k_proj": 1, "self_attn_v_proj": 2}
_LAYER = re.compile(r"text_model_encoder_layers_(\d+)_(\w+)$")
_PEFT = (
    ("base_model.model.", ""),
    ("unet.", "lora_unet_"),
    ("text_encoder_3.", "lora_te3_"),
    ("text_encoder_2.", "lora_te2_"),
    ("text_encoder.", "lora_te_"),
    ("transformer.", "lora_unet_"),
    ("diffusion_model.", "lora_unet_"),  # ComfyUI's own and DiffSynth's files: the checkpoint's names
)
# Prefixes other trainers put before diffusers names already underscored
_UNDERSCORED = {"lora_transformer_": "lora_unet_", "lycoris_": "lora_unet_"}


class KeyMap:
    """Where each LoRA module of one file lands in one checkpoint."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        self.shapes = shapes
        self._by_underscore = {
            key[: -len(".weight")].replace(".", "_"): key for key in shapes if key.endswith(".weight")
        }

    def target(self, name: str) -> Target | None:
        if name + ".weight" in self.shapes:  # the checkpoint's own name (ComfyUI's generic form)
            return Target(name + ".weight")
        name = kohya_name(name)
        split = _SPLIT.match(name)
        if split:  # kohya split_qkv: lora_down.<i>/lora_up.<i> are part i of the fused weight
            whole = self.target(split.group(1))
            return split_part(whole, int(split.group(2)), self.shapes) if whole is not None else None
        for candidate in self._candidates(name):
            if isinstance(candidate, Target):
                if candidate.key in self.shapes:
                    return candidate
            elif candidate in self._by_underscore:
                return Target(self._by_underscore[candidate])
        return None

    def _candidates(self, name: str) -> Iterator[str | Target]:
        if name.startswith("lora_unet_"):
            rest = name[len("lora_unet_") :]
            yield from dit_targets(rest, self.shapes)
            for ldm in unet_names(rest):
                yield "model_diffusion_model_" + ldm
            return
        for prefix, bases in _CLIP_TE.items():
            if name.startswith(prefix):
                yield from (base + name[len(prefix) :] for base in bases)
        if name.startswith(_T5_TE):
            yield _T5 + name.split("_", 2)[2]
        for prefix, base in _OPENCLIP_TE.items():
            if name.startswith(prefix):
                target = self._openclip(base, name[len(prefix) :])
                if target is not None:
                    yield target

    def _openclip(self, base: str, rest: str) -> Target | None:
        m = _LAYER.match(rest)
        if not m:
            return None
        layer, part = m.groups()
        if part in _QKV:
            key = f"{base}{layer}.attn.in_proj_weight"
            width = self.shapes[key][0] // 3 if key in self.shapes else 0
            index = _QKV[part]
            return Target(key, (index * width, (index + 1) * width))
        if part in _OPENCLIP_PART:
            return Target(f"{base}{layer}.{_OPENCLIP_PART[part]}.weight")
        return None


def kohya_name(name: str) -> str:
    """A PEFT/diffusers module name ("unet.down_blocks.0…to_q") in kohya form ("lora_unet_down_blocks_0…to_q")."""
    for prefix, replacement in _UNDERSCORED.items():  # OneTrainer, SimpleTuner's LyCORIS: diffusers names
        if name.startswith(prefix):
            return replacement + name[len(prefix) :]
    if name.startswith("lora_"):
        return name
    for prefix, replacement in _PEFT:
        if name.startswith(prefix):
            name = replacement + name[len(prefix) :]
    if not name.startswith("lora_"):
        name = "lora_unet_" + name
    return name.replace(".", "_")


def unet_names(rest: str) -> list[str]:
    """The checkpoint names (underscored, after model_diffusion_model_) a kohya UNet name may mean."""
    if rest in _UNET_SINGLE:
        return [_UNET_SINGLE[rest]]
    m = re.match(r"(down|up)_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$", rest)
    if m:
        side, i, kind, j, tail = m.groups()
        index = 3 * int(i) + int(j) + (1 if side == "down" else 0)
        part = "1" if kind == "attentions" else "0"
        tail = _RESNET_PARTS.get(tail, tail) if kind == "resnets" else tail
        return [f"{'input' if side == 'down' else 'output'}_blocks_{index}_{part}_{tail}"]
    m = re.match(r"down_blocks_(\d+)_downsamplers_0_conv$", rest)
    if m:
        return [f"input_blocks_{3 * (int(m.group(1)) + 1)}_0_op"]
    m = re.match(r"up_blocks_(\d+)_upsamplers_0_conv$", rest)
    if m:
        index = 3 * int(m.group(1)) + 2
        return [f"output_blocks_{index}_2_conv", f"output_blocks_{index}_1_conv"]  # after an attention, or not
    m = re.match(r"mid_block_attentions_0_(.+)$", rest)
    if m:
        return [f"middle_block_1_{m.group(1)}"]
    m = re.match(r"mid_block_resnets_(\d+)_(.+)$", rest)
    if m:
        return [f"middle_block_{2 * int(m.group(1))}_{_RESNET_PARTS.get(m.group(2), m.group(2))}"]
    return [rest]  # LDM-style names already (SDXL kohya: input_blocks_4_1_…)
