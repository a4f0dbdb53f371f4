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

from lib_merge.arch.layouts import flux_diffusers_modules
from lib_merge.lora.target import UNET, Target

_BLOCK = re.compile(r"(single_)?transformer_blocks_(\d+)_(.+)$")

# Flux's diffusers modules, from the table the layouts read diffusers' Flux files by, keyed by the
# underscored names LoRA files use: (section, name) -> (canonical module, part, split, swap halves).
_FLUX = {(section, name.replace(".", "_")): entry for (section, name), entry in flux_diffusers_modules().items()}
_FLUX_NAMES = {(section, entry[0], entry[1]): name for (section, name), entry in flux_diffusers_modules().items()}
_FLUX_PREFIX = {"double": "double_blocks.{n}.", "single": "single_blocks.{n}.", "top": ""}

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
_NORM_OUT = "final_layer.adaLN_modulation.1"  # diffusers' norm_out.linear: scale, shift (in _FLUX's top)


def dit_targets(rest: str, shapes: Mapping[str, tuple[int, ...]]) -> Iterator[Target]:
    """The Flux and SD3 places a diffusers name (underscored, after `lora_unet_`) may mean; the caller
    keeps the one whose key the checkpoint has."""
    flux = _flux_target("top", "", rest, shapes)
    if flux is not None:
        yield flux
    if rest in _SD3_TOP:
        yield Target(f"{UNET}{_SD3_TOP[rest]}.weight")
    m = _BLOCK.match(rest)
    if not m:
        return
    single, n, part = m.groups()
    flux = _flux_target("single" if single else "double", n, part, shapes)
    if flux is not None:
        yield flux
    if single:
        return
    if part in _SD3_BLOCK:
        key = f"{UNET}joint_blocks.{n}.{_SD3_BLOCK[part]}.weight"
        yield Target(key, swap_halves=part == "norm1_context_linear" and _pre_only(key, shapes))
    elif part in _SD3_QKV:
        where, index = _SD3_QKV[part]
        yield third(f"{UNET}joint_blocks.{n}.{where}.qkv.weight", index, shapes)


def _flux_target(section: str, n: str, part: str, shapes: Mapping[str, tuple[int, ...]]) -> Target | None:
    entry = _FLUX.get((section, part))
    if entry is None:
        return None
    module, index, split, swap = entry
    key = f"{UNET}{_FLUX_PREFIX[section].format(n=n)}{module}.weight"
    if split == "thirds":
        return third(key, index, shapes)
    if split == "qkv+mlp":
        return linear1_part(key, index, shapes)
    return Target(key, swap_halves=swap)


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
        if target.key == f"{UNET}{_NORM_OUT}.weight":
            return "transformer.norm_out.linear"
        m = _ROW_KEY.match(target.key)
        return f"transformer.transformer_blocks.{m.group(2)}.norm1_context.linear" if m else None
    m = _ROW_KEY.match(target.key)
    if target.rows is None or not m:
        return None
    kind, n, rest = m.groups()
    rows, hidden = shapes[target.key][:2]
    if kind == "single_blocks":
        name = _FLUX_NAMES.get(("single", rest, min(target.rows[0] // hidden, 3)))
        return f"transformer.single_transformer_blocks.{n}.{name}" if name else None
    index = target.rows[0] // (rows // 3)
    if kind == "double_blocks":
        name = _FLUX_NAMES.get(("double", rest, index))
    else:
        names = _SD3_ROW_NAMES.get(rest)
        name = names[index] if names else None
    return f"transformer.transformer_blocks.{n}.{name}" if name else None
