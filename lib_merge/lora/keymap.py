"""LoRA module names → checkpoint keys, for SD1, SD2 and SDXL (kohya, diffusers-style and PEFT names).

The checkpoint's own keys are the index: a module's key with every "." turned into "_" is what a
kohya name says after its prefix, once diffusers block names are turned into the checkpoint's
(down_blocks → input_blocks, resnet parts → in_layers/out_layers, …; docs/FORMULAS.md §10).
OpenCLIP text encoders (SD2, SDXL's second) keep q, k and v in one in_proj weight: those
modules map to a row slice of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

UNET = "model.diffusion_model."
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
# Text encoders in CLIP naming: prefix of the LoRA name → the checkpoint's module prefix (underscored).
_CLIP_TE = {
    "lora_te_": "cond_stage_model_transformer_",
    "lora_te1_": "conditioner_embedders_0_transformer_",
}
# OpenCLIP text encoders: prefix of the LoRA name → the checkpoint's prefix (dotted)
_OPENCLIP_TE = {
    "lora_te_": "cond_stage_model.model.transformer.resblocks.",
    "lora_te2_": "conditioner.embedders.1.model.transformer.resblocks.",
}
_OPENCLIP_PART = {"self_attn_out_proj": "attn.out_proj", "mlp_fc1": "mlp.c_fc", "mlp_fc2": "mlp.c_proj"}
_QKV = {"self_attn_q_proj": 0, "self_attn_k_proj": 1, "self_attn_v_proj": 2}
_LAYER = re.compile(r"text_model_encoder_layers_(\d+)_(\w+)$")
# Flux in diffusers names (transformer_blocks = double blocks, single_transformer_blocks = single blocks)
_FLUX_DIFFUSERS = re.compile(r"(single_)?transformer_blocks_(\d+)_(.+)$")
_FLUX_QKV = {
    "attn_to_q": ("img", 0), "attn_to_k": ("img", 1), "attn_to_v": ("img", 2),
    "attn_add_q_proj": ("txt", 0), "attn_add_k_proj": ("txt", 1), "attn_add_v_proj": ("txt", 2),
}  # fmt: skip
_FLUX_DOUBLE = {
    "attn_to_out_0": "img_attn.proj", "attn_to_add_out": "txt_attn.proj",
    "ff_net_0_proj": "img_mlp.0", "ff_net_2": "img_mlp.2",
    "ff_context_net_0_proj": "txt_mlp.0", "ff_context_net_2": "txt_mlp.2",
    "norm1_linear": "img_mod.lin", "norm1_context_linear": "txt_mod.lin",
}  # fmt: skip
_FLUX_SINGLE = {"proj_out": "linear2", "norm_linear": "modulation.lin"}
_FLUX_SINGLE_ROWS = {"attn_to_q": 0, "attn_to_k": 1, "attn_to_v": 2, "proj_mlp": 3}  # × hidden width
_PEFT = (
    ("base_model.model.", ""),
    ("unet.", "lora_unet_"),
    ("text_encoder_2.", "lora_te2_"),
    ("text_encoder.", "lora_te_"),
    ("transformer.", "lora_unet_"),
)


@dataclass(frozen=True)
class Target:
    key: str  # the checkpoint's weight key
    rows: tuple[int, int] | None = None  # a row slice of a fused q/k/v weight
    columns: int | None = None  # the first input channels only (an SD LoRA on an inpainting model's conv_in)

    @property
    def bias_key(self) -> str:
        """The bias beside the weight ("….weight" → "….bias", "in_proj_weight" → "in_proj_bias")."""
        return self.key[: -len("weight")] + "bias"


class KeyMap:
    """Where each LoRA module of one file lands in one checkpoint."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        self.shapes = shapes
        self._by_underscore = {
            key[: -len(".weight")].replace(".", "_"): key for key in shapes if key.endswith(".weight")
        }

    def target(self, name: str) -> Target | None:
        name = kohya_name(name)
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
            flux = self._flux(rest)
            if flux is not None:
                yield flux
            for ldm in unet_names(rest):
                yield "model_diffusion_model_" + ldm
            return
        for prefix, base in _CLIP_TE.items():
            if name.startswith(prefix):
                yield base + name[len(prefix) :]
        for prefix, base in _OPENCLIP_TE.items():
            if name.startswith(prefix):
                target = self._openclip(base, name[len(prefix) :])
                if target is not None:
                    yield target

    def _flux(self, rest: str) -> Target | None:
        """Diffusers names of Flux blocks: separate q/k/v (and the single blocks' MLP input) are row
        slices of the fused qkv / linear1 weights."""
        m = _FLUX_DIFFUSERS.match(rest)
        if not m:
            return None
        single, n, part = m.groups()
        if single:
            key = f"{UNET}single_blocks.{n}.linear1.weight"
            if part in _FLUX_SINGLE:
                return Target(f"{UNET}single_blocks.{n}.{_FLUX_SINGLE[part]}.weight")
            if key not in self.shapes or part not in _FLUX_SINGLE_ROWS:
                return None
            width = self.shapes[f"{UNET}single_blocks.{n}.linear2.weight"][0]
            start = _FLUX_SINGLE_ROWS[part] * width
            return Target(key, (start, start + width if part != "proj_mlp" else self.shapes[key][0]))
        if part in _FLUX_DOUBLE:
            return Target(f"{UNET}double_blocks.{n}.{_FLUX_DOUBLE[part]}.weight")
        if part not in _FLUX_QKV:
            return None
        stream, index = _FLUX_QKV[part]
        key = f"{UNET}double_blocks.{n}.{stream}_attn.qkv.weight"
        width = self.shapes[key][0] // 3 if key in self.shapes else 0
        return Target(key, (index * width, (index + 1) * width))

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
    if name.startswith("lora_transformer_"):  # Flux in diffusers names, kohya-style prefix
        return "lora_unet_" + name[len("lora_transformer_") :]
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
