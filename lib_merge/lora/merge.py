"""Several LoRAs into one (docs/FORMULAS.md §10.1).

`concat` is exact: per module the scaled ups are placed side by side and the downs stacked, so the
output's up · down is Σ_j c_j · s_j · up_j · down_j (c_j = strength_j · block weight, s_j = alpha_j/r_j),
rank Σ r_j, alpha = rank. `svd` sums the full ΔW_j of any module type and re-ranks the sum.
Modules are grouped by the checkpoint weight they change, so kohya, diffusers-style and PEFT names
of one module meet; the output uses kohya names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from lib_merge.arch.blocks import schema_for
from lib_merge.arch.registry import ARCHITECTURES
from lib_merge.errors import Cancelled, LoraFormatError, LoraMismatchError, ParameterError
from lib_merge.io.hashing import file_sha256
from lib_merge.io.source import SourceModel
from lib_merge.lora.blocks import lora_block_vector
from lib_merge.lora.dit import diffusers_name
from lib_merge.lora.factor import Factoring, RankRule, factorise
from lib_merge.lora.file import LoraFile, base_shapes, match, target_shape
from lib_merge.lora.formats import LoraModule, factor_shape, module_bias_delta, module_delta
from lib_merge.lora.keymap import Target, kohya_name
from lib_merge.lora.names import target_names
from lib_merge.lora.write import LoraBuild, OutModule

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LoraInput:
    path: str
    strength: float = 1.0
    blocks: str | None = None  # a LoRA block preset or vector (lora/blocks.py)


@dataclass
class LoraMergeSettings:
    inputs: list[LoraInput]
    method: Literal["concat", "svd"] = "concat"
    rule: RankRule = field(default_factory=lambda: RankRule(energy=0.99))  # svd only
    factoring: Factoring = field(default_factory=Factoring)  # svd only
    model: str | None = None  # the base checkpoint: its shapes, and its weights for IA3 and DoRA inputs
    presets: dict[str, tuple[float, ...]] | None = None  # LoRA block presets by name; None: the shipped ones
    model_if_same_base: bool = False  # the model is a hint (the WebUI's loaded one): unused for other bases


@dataclass
class _Source:
    """One input LoRA, read and matched, with its block vector (None: strength everywhere)."""

    spec: LoraInput
    lora: LoraFile
    targets: dict[str, Target]
    vector: list[float] | None


def merge_loras(
    settings: LoraMergeSettings,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoraBuild:
    """The merged LoRA, in memory (LoRAs are small); errors name the file and module."""
    if not settings.inputs:
        raise ParameterError("no LoRA to merge: give one FILE:STRENGTH at least")
    if settings.method not in ("concat", "svd"):
        raise ParameterError(f"LoRA merge method {settings.method!r}: choose concat or svd")
    loras = [LoraFile.read(spec.path) for spec in settings.inputs]
    model = SourceModel(settings.model) if settings.model else None
    try:
        if model is not None and settings.model_if_same_base and model.arch.id != _common_base(loras):
            model.close()
            model = None
        if model is not None:
            arch_id, prediction, shapes = model.arch.id, model.arch.prediction, dict(model.shapes)
        else:
            arch_id, prediction = _common_base(loras), "epsilon"
            shapes = dict(base_shapes(arch_id))
        schema = schema_for(arch_id)
        sources = []
        for spec, lora in zip(settings.inputs, loras, strict=True):
            if spec.blocks and schema is None:
                raise ParameterError(f"{lora.name}: block weights need SD1, SD2, SDXL or Flux, not {arch_id}")
            vector = lora_block_vector(spec.blocks, schema.id, settings.presets) if spec.blocks else None
            if model is not None:
                targets = match(lora, shapes, model.name).targets
            else:
                targets = _place_without_model(lora, shapes, vector is not None)
            sources.append(_Source(spec, lora, targets, vector))
        groups = _group(sources)
        names = target_names(shapes, arch_id)  # pseudo keys (below) have none: their own kohya name
        modules: dict[str, OutModule] = {}
        for done, (target, members) in enumerate(groups.items()):
            if should_stop is not None and should_stop():
                raise Cancelled("LoRA merge cancelled")
            name = _output_name(target, names, shapes, members[0][1].name)
            weights = [src.spec.strength * _block(src, target, schema) for src, _ in members]
            if settings.method == "concat":
                out = _concat(members, weights, target_shape(target, shapes))
            else:
                out = _svd(members, weights, target, shapes, model, settings)
            if out is not None:
                modules[name] = out
            if progress is not None:
                progress(done + 1, len(groups))
        recipe = _recipe(settings, sources, model)
        notes = [f"{src.lora.name}: {len(src.lora.modules) - len(src.targets)} modules not found" for src in sources
                 if len(src.targets) < len(src.lora.modules)]  # fmt: skip
        sources = [lora.path for lora in loras] + ([model.path] if model else [])
        return LoraBuild(modules, arch_id, prediction, recipe, notes, sources)
    finally:
        if model is not None:
            model.close()


def _output_name(target: Target, names: dict, shapes: dict, first: str) -> str:
    """kohya's name for a whole weight; diffusers' (`transformer.…`) for a row slice of a fused Flux/SD3
    weight or a weight in diffusers' row order (what loaders read for them); else the input's own name."""
    if target in names:
        return names[target].name
    return diffusers_name(target, shapes) or kohya_name(first)


def _common_base(loras: list[LoraFile]) -> str:
    """The base all inputs are made for (without a model, that is what the output is for)."""
    bases = {lora.name: lora.likely_base() or "sd1" for lora in loras}
    if len(set(bases.values())) > 1:
        listed = ", ".join(f"{name} is for {ARCHITECTURES[b].label}" for name, b in bases.items())
        raise LoraMismatchError(f"the LoRAs are made for different models: {listed}")
    return next(iter(bases.values()))


def _place_without_model(lora: LoraFile, shapes: dict, blocks: bool) -> dict[str, Target]:
    """Modules placed in the base's reference layout where they fit it; others (a miniature or an
    unusual LoRA) under a key of their own, with the shape their factors tell (added to `shapes`)."""
    targets = match(lora, shapes, "the reference layout", strict=False).targets
    for name, module in lora.modules.items():
        if name in targets:
            continue
        shape = factor_shape(module)
        if shape is None:
            raise ParameterError(f"{lora.name}: module {name} ({module.kind}) needs the base model to be merged")
        if blocks:
            raise ParameterError(
                f"{lora.name}: module {name} is not in the reference layout; give the model for block weights"
            )
        key = "lora:" + kohya_name(name)
        shapes.setdefault(key, shape)
        targets[name] = Target(key)
    return targets


def _group(sources: list[_Source]) -> dict[Target, list[tuple[_Source, LoraModule]]]:
    groups: dict[Target, list[tuple[_Source, LoraModule]]] = {}
    for src in sources:
        for name, target in src.targets.items():
            groups.setdefault(target, []).append((src, src.lora.modules[name]))
    return groups


def _block(src: _Source, target: Target, schema) -> float:
    if src.vector is None or schema is None:
        return 1.0
    slot = schema.slot_of(target.key)
    return src.vector[schema.index(slot)] if slot in schema.slots else 0.0


def _concat(members, weights: list[float], shape: tuple[int, ...]) -> OutModule:
    ups, downs, biases = [], [], []
    for (src, module), c in zip(members, weights, strict=True):
        if module.kind != "lora" or module.dora:
            kind = "DoRA" if module.dora else module.kind
            raise LoraFormatError(
                f"concat needs LoRA/LoCon inputs; use svd ({src.lora.name}: module {module.name} is {kind})"
            )
        up, down = _plain_pair(module)
        ups.append(up.reshape(shape[0], -1) * (module.scale() * c))
        downs.append(down.reshape(down.shape[0], *(shape[1:] if len(shape) == 4 else (-1,))))
        bias = module_bias_delta(module)
        if bias is not None:
            biases.append(bias * c)
    up = torch.cat(ups, dim=1)
    down = torch.cat(downs, dim=0)
    if len(shape) == 4:
        up = up[:, :, None, None]
    return OutModule(up, down, float(down.shape[0]), sum(biases) if biases else None)


def _plain_pair(module: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
    """(up [out, r], down [r, in(, kh, kw)]) of a LoRA/LoCon module; a Tucker mid is folded into down."""
    up = module.parts["up"].float().flatten(1)
    down = module.parts["down"].float()
    if "mid" in module.parts:  # ΔW[p, r, k, l] = Σ up[p, i] mid[i, j, k, l] down[j, r]
        down = torch.einsum("ijkl,jr->irkl", module.parts["mid"].float(), down.flatten(1))
    return up, down


def _svd(members, weights, target: Target, shapes, model: SourceModel | None, settings) -> OutModule | None:
    weight = _target_weight(members, target, shapes, model)
    total = torch.zeros_like(weight)
    bias = None
    for (_, module), c in zip(members, weights, strict=True):
        total += c * module_delta(module, weight).reshape(weight.shape)
        delta_b = module_bias_delta(module)
        if delta_b is not None:
            bias = c * delta_b if bias is None else bias + c * delta_b
    pair = factorise(total, settings.rule, settings.factoring, target.key)
    if pair is None:
        return None
    return OutModule(pair.up, pair.down, float(pair.rank), bias)


def _target_weight(members, target: Target, shapes, model: SourceModel | None) -> torch.Tensor:
    """The base weight (or its row slice) the module changes: read from the model where a module's ΔW
    depends on it (IA3, DoRA), else zeros that only give the shape."""
    needs_base = [(src, m) for src, m in members if m.dora or m.kind == "ia3"]
    if needs_base and model is None:
        src, m = needs_base[0]
        kind = "DoRA" if m.dora else "IA3"
        raise ParameterError(f"{src.lora.name}: module {m.name} is {kind}, its ΔW depends on the base: give the model")
    if model is None or not needs_base:
        return torch.zeros(target_shape(target, shapes), dtype=torch.float32)
    weight = model.read(target.key).float()
    if target.rows:
        weight = weight[target.rows[0] : target.rows[1]]
    if target.columns:
        weight = weight[:, : target.columns]
    return weight.clone()


def _recipe(settings: LoraMergeSettings, sources: list[_Source], model: SourceModel | None) -> dict:
    recipe: dict = {
        "method": settings.method,
        "inputs": [
            {
                "file": src.lora.name,
                "sha256": file_sha256(src.lora.path),
                "strength": src.spec.strength,
                "blocks": src.vector,
            }
            for src in sources
        ],
    }
    if settings.method == "svd":
        how = settings.factoring
        recipe.update(rank_rule=settings.rule.describe(), full_svd=how.full_svd, seed=how.seed, clamp=how.clamp)
    if model is not None:
        recipe["model"] = {"file": os.path.basename(model.path), "sha256": model.sha256()}
    return recipe
