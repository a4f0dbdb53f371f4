"""Per-key planning: what every output key is, decided from headers alone.

A key either copies one model's stored tensor unchanged, or evaluates a reduced merge
tree whose parameters are already resolved for that key's block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lib_merge.arch.blocks import SCHEMAS, VAE_SLOT
from lib_merge.arch.registry import PREDICTION_MARKERS, is_mergeable
from lib_merge.engine.bind import BoundRecipe
from lib_merge.errors import ShapeMismatchError
from lib_merge.io.source import SourceModel
from lib_merge.io.writer import PlannedTensor
from lib_merge.methods import METHODS, MethodSpec
from lib_merge.rebasin.permuted import PermutedModel
from lib_merge.recipe.nodes import ModelRef, Node, primary_model
from lib_merge.recipe.vectors import BlockVector

INPUT_CONV_SUFFIX = "model.diffusion_model.input_blocks.0.0.weight"


Leaf = SourceModel | PermutedModel  # what a key is read from: a file, or a file through re-basin permutations


@dataclass(frozen=True)
class Step:
    """One method call of a reduced tree: inputs are sources (leaves) or earlier steps."""

    method: MethodSpec
    inputs: tuple[Leaf | Step, ...]
    params: dict[str, float]


Reduced = Leaf | Step


def is_leaf(node: Reduced) -> bool:
    return not isinstance(node, Step)


def elementwise_tree(node: Reduced) -> bool:
    """Whether every step of the tree may run on matching chunks of its inputs."""
    if is_leaf(node):
        return True
    return node.method.elementwise and all(elementwise_tree(i) for i in node.inputs)


def leaf_uses(node: Reduced) -> int:
    """How many times the tree reads a leaf (a leaf used twice counts twice: methods write into their inputs)."""
    return 1 if is_leaf(node) else sum(leaf_uses(i) for i in node.inputs)


def bounded_tree(node: Reduced) -> bool:
    """Whether every step keeps finite inputs finite with its parameters (convex combinations)."""
    if is_leaf(node):
        return True
    return node.method.bounded(node.params) and all(bounded_tree(i) for i in node.inputs)


@dataclass(frozen=True)
class KeyJob:
    key: str
    out: PlannedTensor
    tree: Reduced  # a bare leaf means: that model's tensor (cast when `cast` is set)
    cast: bool  # False: copy the stored bytes unchanged
    slot: str | None = None
    inpaint_channels: int | None = None  # merge only [:, :n] of the input conv, keep A's rest

    def leaves(self) -> list[Leaf]:
        found: list[Leaf] = []

        def visit(node: Reduced) -> None:
            if is_leaf(node):
                if not any(node is f for f in found):
                    found.append(node)
            else:
                for i in node.inputs:
                    visit(i)

        visit(self.tree)
        return found

    @property
    def read_bytes(self) -> int:
        return sum(s.info(self.key).nbytes for s in self.leaves())


@dataclass
class MergePlan:
    jobs: list[KeyJob]
    kept_missing: dict[str, int]  # role -> keys missing in that model, kept from A
    dropped_b_only: list[str]
    pruned: int
    permuted: list[PermutedModel] = field(default_factory=list)  # re-basin inputs, matched before the run

    @property
    def tensors(self) -> list[PlannedTensor]:
        return [j.out for j in self.jobs]


def plan_merge(bound: BoundRecipe, output_dtype: torch.dtype, prune: bool = True) -> MergePlan:
    primary = bound.primary
    arch = primary.arch.arch
    roles = {id(bound.sources[r]): bound.role(r) for r in bound.models}
    missing: dict[str, int] = {}
    jobs: list[KeyJob] = []
    pruned = 0

    def keep(key: str) -> bool:
        return not prune or arch is None or arch.component_of(key) is not None or key in PREDICTION_MARKERS

    for key in primary.keys:
        if not keep(key):
            pruned += 1
            continue
        info = primary.info(key)
        slot = _slot(key, bound)
        if not is_mergeable(key, info.dtype) or slot is None:
            jobs.append(KeyJob(key, PlannedTensor(key, info.dtype, info.shape), primary, cast=False))
            continue
        channels = _inpaint_channels(key, bound)
        tree = _reduce(bound.root, key, slot, bound, missing, roles, channels)
        jobs.append(KeyJob(key, PlannedTensor(key, output_dtype, info.shape), tree, True, slot, channels))

    dropped: list[str] = []
    seen = set(primary.keys)
    for ref in bound.models[1:]:
        source = bound.sources[ref]
        for key in source.keys:
            if key in seen:
                continue
            seen.add(key)
            info = source.info(key)
            if arch is not None and arch.component_of(key) and is_mergeable(key, info.dtype):
                jobs.append(KeyJob(key, PlannedTensor(key, output_dtype, info.shape), source, True))
            else:
                dropped.append(key)
    return MergePlan(jobs, missing, dropped, pruned, list(bound.permuted.values()))


def _slot(key: str, bound: BoundRecipe) -> str | None:
    arch = bound.primary.arch.arch
    if arch is None:
        return "*"  # unknown architecture: every mergeable key takes the scalar parameters
    if arch.component_of(key) is None or bound.schema is None:
        return None
    return bound.schema.slot_of(key)


def _inpaint_channels(key: str, bound: BoundRecipe) -> int | None:
    if key != INPUT_CONV_SUFFIX:
        return None
    counts = {s.info(key).shape[1] for s in bound.sources.values() if key in s and len(s.info(key).shape) == 4}
    return min(counts) if len(counts) > 1 else None


def param_at(value: object, slot: str, key: str, bound: BoundRecipe) -> object:
    if hasattr(value, "at_key"):  # a bound LoRA: this key's modules, or None
        return value.at_key(key)
    if isinstance(value, BlockVector):
        if bound.schema is not None and value.schema_id != bound.schema.id:  # a finer schema (SDXL's 110)
            fine = SCHEMAS[value.schema_id]
            return value.value(fine, fine.slot_of(key) or slot)
        return value.value(bound.schema, slot)
    return value  # numbers as parsed (whole-number parameters stay exact), words and value objects as they are


def _sets_vae(params: dict) -> bool:
    return any(isinstance(v, BlockVector) and v.vae is not None for v in params.values())


def slots_of(key: str, slot: str, bound: BoundRecipe) -> set[str]:
    """The key's block, and its fine block where the schema has one (SDXL: IN04 and IN411)."""
    fine = SCHEMAS[bound.schema.fine].slot_of(key) if bound.schema is not None and bound.schema.fine else None
    return {slot, fine} - {None}


def _source_of(node: Node, bound: BoundRecipe) -> SourceModel:
    return bound.sources[primary_model(node)]


def _reduce(
    node: Node, key: str, slot: str, bound: BoundRecipe, missing: dict, roles: dict, channels: int | None
) -> Reduced:
    if isinstance(node, ModelRef):
        return bound.sources[node]
    spec = METHODS[node.method]
    if spec.references:  # rebasin(B, ref=A): B's tensor, through the permutations where a group touches it
        permuted = bound.permuted_for(node)
        return permuted if permuted.covers(key) else bound.sources[node.inputs[0]]
    first = _source_of(node.inputs[0], bound)
    ref_shape = first.info(key).shape
    for child in node.inputs[1:]:
        source = _source_of(child, bound)
        if key not in source:
            role = roles[id(source)]
            missing[role] = missing.get(role, 0) + 1
            return _reduce(node.inputs[0], key, slot, bound, missing, roles, channels)
        shape = source.info(key).shape
        if shape != ref_shape and not (channels and shape[:1] + shape[2:] == ref_shape[:1] + ref_shape[2:]):
            raise ShapeMismatchError(
                f"key {key!r} has shape {list(ref_shape)} in {first.name} but {list(shape)} in {source.name}"
            )
    params = {
        name: param_at(node.params.get(name, p.default), slot, key, bound) for p in spec.params for name in [p.name]
    }
    rules, keys = node.params.get("elemental"), node.params.get("filter")
    slots = slots_of(key, slot, bound) if rules is not None or keys is not None else {slot}
    if rules is not None and "alpha" in params:
        params["alpha"] = rules.alpha_for(key, slots, params["alpha"])
    skipped = keys is not None and not keys.merges(key, slots)
    skipped = skipped or (slot == VAE_SLOT and bound.schema is not None and bound.schema.vae_keeps_a
                          and not _sets_vae(node.params))  # fmt: skip
    kept = skipped or (spec.keeps_key is not None and spec.keeps_key(key))
    through = 0 if kept else spec.passthrough(params)
    if through is not None:
        return _reduce(node.inputs[through], key, slot, bound, missing, roles, channels)
    inputs = tuple(_reduce(i, key, slot, bound, missing, roles, channels) for i in node.inputs)
    return Step(spec, inputs, params)


__all__ = ["KeyJob", "MergePlan", "Step", "is_mergeable", "plan_merge"]
