"""Diffusers module names of the Flux and SD3/SD3.5 transformers → the single-file checkpoint's keys.

Trainers built on diffusers (ai-toolkit, SimpleTuner, OneTrainer, diffusers' own scripts) name the
transformer's modules as diffusers does; the checkpoint Alloy reads holds the original layout (BFL's
for Flux, SAI's MMDiT for SD3). Separate q, k and v (and a Flux single block's MLP input) are row
slices of the fused weight; `norm_out.linear` (and SD3's last, pre-only context norm) keep scale before
shift where the original keeps shift before scale. The names come underscored (after `lora_unet_`),
so one table serves `transformer.…`, `lora_transformer_…` and `lycoris_…` files alike. The same sources
are in ComfyUI's comfy/utils.py (flux_to_diffusers, mmdit_to_diffusers) and diffusers' conversion scripts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from lib_merge.lora.target import UNET, Target

_BLOCK = re.compile(r"(single_)?transformer_blocks_(\d+)_(.+)$")

# Flux double block n: (image or text stream, which third of qkv)
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
_FLUX_SINGLE_ROWS = {"attn_to_q": 0, "attn_to_k": 1, "attn_to_v": 2, "proj_mlp": 3}  # × hidden width; mlp: the rest
_FLUX_TOP = {
    "x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
    "time_text_embed_timestep_embedder_linear_1": "time_in.in_layer",
    "time_text_embed_timestep_embedder_linear_2": "time_in.out_layer",
    "time_text_embed_text_embedder_linear_1": "vector_in.in_layer",
    "time_text_embed_text_embedder_linear_2": "vector_in.out_layer",
    "time_text_embed_guidance_embedder_linear_1": "guidance_in.in_layer",
    "time_text_embed_guidance_embedder_linear_2": "guidance_in.out_layer",
}  # fmt: skip

# SD3/SD3.5 transformer block n = joint_blocks.n: (fused weight, which third)
_SD3_QKV = {
    "attn_to_q": ("x_block.attn", 0), "attn_to_k": ("x_block.attn", 1), "attn_to_v": ("x_block.attn", 2),
    "attn_add_q_proj": ("context_block.attn", 0), "attn_add_k_proj": ("context_block.attn", 1),
    "attn_add_v_proj": ("context_block.attn", 2),
    "attn2_to_q": ("x_block.attn2", 0), "attn2_to_k": ("x_block.attn2", 1), "attn2_to_v": ("x_block.attn2", 2),
}  # fmt: skip
_SD3_BLOCK = {
    "attn_to_out_0": "x_block.attn.proj", "attn_to_add_out": "context_block.attn.proj",
    "attn2_to_out_0": "x_block.attn2.proj",
    "ff_net_0_proj": "x_block.mlp.fc1", "ff_net_2": "x_block.mlp.fc2",
    "ff_context_net_0_proj": "context_block.mlp.fc1", "ff_context_net_2": "context_block.mlp.fc2",
    "norm1_linear": "x_block.adaLN_modulation.1", "norm1_context_linear": "context_block.adaLN_modulation.1",
}  # fmt: skip
_SD3_TOP = {
    "pos_embed_proj": "x_embedder.proj", "context_embedder": "context_embedder", "proj_out": "final_layer.linear",
    "time_text_embed_timestep_embedder_linear_1": "t_embedder.mlp.0",
    "time_text_embed_timestep_embedder_linear_2": "t_embedder.mlp.2",
    "time_text_embed_text_embedder_linear_1": "y_embedder.mlp.0",
    "time_text_embed_text_embedder_linear_2": "y_embedder.mlp.2",
}  # fmt: skip
_NORM_OUT = ("norm_out_linear", "final_layer.adaLN_modulation.1")  # both: scale, shift in diffusers


def dit_targets(rest: str, shapes: Mapping[str, tuple[int, ...]]) -> Iterator[Target]:
    """The Flux and SD3 places a diffusers name (underscored, after `lora_unet_`) may mean; the caller
    keeps the one whose key the checkpoint has."""
    if rest == _NORM_OUT[0]:
        yield Target(f"{UNET}{_NORM_OUT[1]}.weight", swap_halves=True)
        return
    for table in (_FLUX_TOP, _SD3_TOP):
        if rest in table:
            yield Target(f"{UNET}{table[rest]}.weight")
    m = _BLOCK.match(rest)
    if not m:
        return
    single, n, part = m.groups()
    if single:
        target = _flux_single(int(n), part, shapes)
        if target is not None:
            yield target
        return
    if part in _FLUX_DOUBLE:
        yield Target(f"{UNET}double_blocks.{n}.{_FLUX_DOUBLE[part]}.weight")
    elif part in _FLUX_QKV:
        stream, index = _FLUX_QKV[part]
        yield third(f"{UNET}double_blocks.{n}.{stream}_attn.qkv.weight", index, shapes)
    if part in _SD3_BLOCK:
        key = f"{UNET}joint_blocks.{n}.{_SD3_BLOCK[part]}.weight"
        yield Target(key, swap_halves=part == "norm1_context_linear" and _pre_only(key, shapes))
    elif part in _SD3_QKV:
        where, index = _SD3_QKV[part]
        yield third(f"{UNET}joint_blocks.{n}.{where}.qkv.weight", index, shapes)


def _flux_single(n: int, part: str, shapes: Mapping[str, tuple[int, ...]]) -> Target | None:
    if part in _FLUX_SINGLE:
        return Target(f"{UNET}single_blocks.{n}.{_FLUX_SINGLE[part]}.weight")
    if part not in _FLUX_SINGLE_ROWS:
        return None
    return linear1_part(f"{UNET}single_blocks.{n}.linear1.weight", _FLUX_SINGLE_ROWS[part], shapes)


def third(key: str, index: int, shapes: Mapping[str, tuple[int, ...]]) -> Target:
    """Rows of q (0), k (1) or v (2) in a fused qkv weight: equal thirds."""
    width = shapes[key][0] // 3 if key in shapes else 0
    return Target(key, (index * width, (index + 1) * width))


def linear1_part(key: str, index: int, shapes: Mapping[str, tuple[int, ...]]) -> Target:
    """Rows of q, k, v (0–2) or the MLP input (3) in a Flux single block's linear1: q, k and v are one
    hidden width each (linear1's input width), the MLP takes the rest."""
    rows, hidden = shapes[key][:2] if key in shapes else (0, 0)
    start = index * hidden
    return Target(key, (start, rows if index == 3 else start + hidden))


def split_part(target: Target, index: int, shapes: Mapping[str, tuple[int, ...]]) -> Target | None:
    """Part `index` of a kohya `split_qkv` module (`lora_down.<index>.weight`): a third of a fused qkv,
    or a quarter-by-role of a Flux single block's linear1 (q, k, v, mlp)."""
    key = target.key
    if key.endswith(".linear1.weight") and index <= 3:
        return linear1_part(key, index, shapes)
    if key.endswith(".qkv.weight") and index <= 2:
        return third(key, index, shapes)
    return None


def _pre_only(key: str, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """SD3's last context block modulates only shift and scale (2 widths, not 6): diffusers' norm for it
    is the continuous one, which keeps scale first."""
    shape = shapes.get(key)
    return shape is not None and len(shape) == 2 and shape[0] == 2 * shape[1]


_FLUX_ROW_NAMES = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_SD3_ROW_NAMES = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
}
_ROW_KEY = re.compile(re.escape(UNET) + r"(double_blocks|single_blocks|joint_blocks)\.(\d+)\.(.+)\.weight$")


def diffusers_name(target: Target, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The diffusers module name (`transformer.…`, as ComfyUI and diffusers read it) of a row slice of a
    fused Flux/SD3 weight, or of a weight in diffusers' row order: what a merged LoRA calls such a module."""
    if target.swap_halves:
        if target.key == f"{UNET}{_NORM_OUT[1]}.weight":
            return "transformer.norm_out.linear"
        m = _ROW_KEY.match(target.key)
        return f"transformer.transformer_blocks.{m.group(2)}.norm1_context.linear" if m else None
    m = _ROW_KEY.match(target.key)
    if target.rows is None or not m:
        return None
    kind, n, rest = m.groups()
    rows, hidden = shapes[target.key][:2]
    if kind == "single_blocks" and rest == "linear1":
        index = min(target.rows[0] // hidden, 3)
        part = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")[index]
        return f"transformer.single_transformer_blocks.{n}.{part}"
    names = (_FLUX_ROW_NAMES if kind == "double_blocks" else _SD3_ROW_NAMES).get(rest)
    if names is None or kind == "single_blocks":
        return None
    return f"transformer.transformer_blocks.{n}.{names[target.rows[0] // (rows // 3)]}"
