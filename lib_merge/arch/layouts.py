"""Key layouts of one architecture: the names other tools store the same weights under.

Alloy merges in one canonical layout per architecture (the single-file checkpoint: the diffuser
under `model.diffusion_model.` with its original names, text encoders and VAE beside it). Flux
files also come as BFL's transformer alone (the same names without the prefix) and in diffusers'
names, where some canonical tensors are split into parts by rows (fused q, k, v). A layout says,
for each canonical key, which stored keys make it: read, the parts are joined by rows; written,
the canonical tensor is split by rows again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lib_merge.arch.registry import UNET

SINGLE_FILE = "single-file"
BFL = "bfl"
DIFFUSERS = "diffusers"
LAYOUTS = (SINGLE_FILE, BFL, DIFFUSERS)
# The architectures whose files come in several layouts, and which ones Alloy writes (diffusers names
# Chroma's guidance layer otherwise than BFL, and that mapping is not known here).
LAYOUT_FAMILIES = {"flux": LAYOUTS, "chroma": (SINGLE_FILE, BFL)}
LAYOUT_LABELS = {
    SINGLE_FILE: "single-file layout (model.diffusion_model. with text encoders and VAE)",
    BFL: "BFL layout (the transformer alone)",
    DIFFUSERS: "diffusers layout (the transformer alone)",
}


@dataclass(frozen=True)
class Parts:
    """The stored keys whose rows, in order, make one canonical tensor."""

    keys: tuple[str, ...]
    sizes: str = ""  # how a canonical tensor splits: "" whole, "thirds", "qkv+mlp"
    swap_halves: bool = False  # diffusers' final modulation stores (scale, shift), BFL (shift, scale)


# (canonical module, stored modules, split, swap) for diffusers' Flux transformer.
_LINEAR = (("weight", "weight"), ("bias", "bias"))
_NORM = (("scale", "weight"),)
_DOUBLE = (
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), "thirds", _LINEAR),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "thirds", _LINEAR),
    ("img_attn.proj", ("attn.to_out.0",), "", _LINEAR),
    ("txt_attn.proj", ("attn.to_add_out",), "", _LINEAR),
    ("img_attn.norm.query_norm", ("attn.norm_q",), "", _NORM),
    ("img_attn.norm.key_norm", ("attn.norm_k",), "", _NORM),
    ("txt_attn.norm.query_norm", ("attn.norm_added_q",), "", _NORM),
    ("txt_attn.norm.key_norm", ("attn.norm_added_k",), "", _NORM),
    ("img_mlp.0", ("ff.net.0.proj",), "", _LINEAR),
    ("img_mlp.2", ("ff.net.2",), "", _LINEAR),
    ("txt_mlp.0", ("ff_context.net.0.proj",), "", _LINEAR),
    ("txt_mlp.2", ("ff_context.net.2",), "", _LINEAR),
    ("img_mod.lin", ("norm1.linear",), "", _LINEAR),
    ("txt_mod.lin", ("norm1_context.linear",), "", _LINEAR),
)
_SINGLE = (
    ("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "qkv+mlp", _LINEAR),
    ("linear2", ("proj_out",), "", _LINEAR),
    ("norm.query_norm", ("attn.norm_q",), "", _NORM),
    ("norm.key_norm", ("attn.norm_k",), "", _NORM),
    ("modulation.lin", ("norm.linear",), "", _LINEAR),
)
_TOP = (
    ("img_in", ("x_embedder",), "", _LINEAR),
    ("txt_in", ("context_embedder",), "", _LINEAR),
    ("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",), "", _LINEAR),
    ("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",), "", _LINEAR),
    ("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",), "", _LINEAR),
    ("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",), "", _LINEAR),
    ("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",), "", _LINEAR),
    ("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",), "", _LINEAR),
    ("final_layer.linear", ("proj_out",), "", _LINEAR),
)
_FINAL_MODULATION = ("final_layer.adaLN_modulation.1", ("norm_out.linear",), "", _LINEAR)
_BLOCK_INDEX = re.compile(
    r"(?:model\.diffusion_model\.)?(double_blocks|single_blocks|transformer_blocks|single_transformer_blocks)\.(\d+)\."
)


def flux_diffusers_modules() -> dict[tuple[str, str], tuple[str, int, str, bool]]:
    """(section, diffusers module) -> (canonical module, part index, split, swap halves) for the weights of
    diffusers' Flux transformer; section is "double", "single" or "top". LoRA module names of diffusers
    trainers are these modules (lora/dit.py), so the same table serves the files and the LoRAs."""
    out = {}
    sections = (("double", _DOUBLE), ("single", _SINGLE), ("top", _TOP + (_FINAL_MODULATION,)))
    for section, table in sections:
        for module, stored, sizes, params in table:
            if params is not _LINEAR:
                continue
            for index, name in enumerate(stored):
                out[(section, name)] = (module, index, sizes, module == _FINAL_MODULATION[0])
    return out


def _block_counts(keys: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        m = _BLOCK_INDEX.match(key)
        if m:
            counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)) + 1)
    return counts


def _diffusers_rules(double: int, single: int) -> dict[str, Parts]:
    """Canonical key -> its parts in diffusers' names, for a transformer of this depth."""
    rules: dict[str, Parts] = {}

    def add(canonical_prefix: str, stored_prefix: str, table, swap: bool = False) -> None:
        for module, stored, sizes, params in table:
            for canonical_param, stored_param in params:
                keys = tuple(f"{stored_prefix}{s}.{stored_param}" for s in stored)
                rules[f"{canonical_prefix}{module}.{canonical_param}"] = Parts(keys, sizes, swap)

    for n in range(double):
        add(f"{UNET}double_blocks.{n}.", f"transformer_blocks.{n}.", _DOUBLE)
    for n in range(single):
        add(f"{UNET}single_blocks.{n}.", f"single_transformer_blocks.{n}.", _SINGLE)
    add(UNET, "", _TOP)
    add(UNET, "", (_FINAL_MODULATION,), swap=True)
    return rules


def detect_layout(stored: Iterable[str]) -> str:
    """Which layout a file's keys are in (single-file when nothing else fits)."""
    keys = set(stored)
    if any(k.startswith(UNET) for k in keys):
        return SINGLE_FILE
    counts = _block_counts(keys)
    if "transformer_blocks" in counts and "single_transformer_blocks" in counts:
        return DIFFUSERS
    if "double_blocks" in counts and "single_blocks" in counts:
        return BFL
    return SINGLE_FILE


def canonical_parts(layout: str, stored: Iterable[str]) -> dict[str, Parts]:
    """Canonical key -> stored parts, for every stored key; keys no rule knows keep their names."""
    stored = list(stored)
    if layout == SINGLE_FILE:
        return {k: Parts((k,)) for k in stored}
    if layout == BFL:
        return {UNET + k: Parts((k,)) for k in stored}
    counts = _block_counts(stored)
    rules = _diffusers_rules(counts.get("transformer_blocks", 0), counts.get("single_transformer_blocks", 0))
    present = set(stored)
    out = {c: p for c, p in rules.items() if all(k in present for k in p.keys)}
    used = {k for p in out.values() for k in p.keys}
    out.update({k: Parts((k,)) for k in stored if k not in used})
    return out


def stored_parts(layout: str, canonical: Iterable[str]) -> dict[str, Parts]:
    """Canonical key -> the stored keys a file of `layout` writes it as; keys the layout cannot hold
    (text encoders and VAE beside a transformer alone) have no entry."""
    canonical = list(canonical)
    if layout == SINGLE_FILE:
        return {k: Parts((k,)) for k in canonical}
    diffuser = [k for k in canonical if k.startswith(UNET)]
    if layout == BFL:
        return {k: Parts((k.removeprefix(UNET),)) for k in diffuser}
    counts = _block_counts(diffuser)
    rules = _diffusers_rules(counts.get("double_blocks", 0), counts.get("single_blocks", 0))
    return {k: rules.get(k, Parts((k.removeprefix(UNET),))) for k in diffuser}


def split_rows(parts: Parts, canonical_key: str, shapes: Mapping[str, tuple[int, ...]]) -> list[int]:
    """Row counts of each part of a canonical tensor of this shape."""
    rows = shapes[canonical_key][0]
    if parts.sizes == "thirds":
        return [rows // 3] * 3
    if parts.sizes == "qkv+mlp":  # q, k, v are as wide as the block; the MLP takes the rest
        hidden = shapes[canonical_key.rsplit(".", 2)[0] + ".linear2.weight"][0]
        return [hidden, hidden, hidden, rows - 3 * hidden]
    return [rows]
