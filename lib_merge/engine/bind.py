"""Binding a parsed recipe to files: open the models, check they fit together, resolve vectors.

Everything here reads headers only, so every input problem is reported before a tensor is read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from lib_merge.arch.blocks import SCHEMAS, BlockSchema, schema_for
from lib_merge.arch.detect import ArchInfo
from lib_merge.engine.progress import ProgressFn, hashing_progress
from lib_merge.errors import (
    ArchMismatchError,
    BlockSchemaError,
    ModelHashMismatchError,
    ModelNotFoundError,
    RecipeError,
)
from lib_merge.io.source import SourceModel
from lib_merge.lora.bake import BoundLora, bind_lora
from lib_merge.methods import METHODS
from lib_merge.methods.adjust import AdjustValues
from lib_merge.methods.lora import LoraRef
from lib_merge.rebasin.permuted import PermutedModel
from lib_merge.recipe.elemental import Elemental
from lib_merge.recipe.filters import KeyFilter
from lib_merge.recipe.hashed import HashedRecipe, role_name
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef, Node, open_params, walk_merges, walk_models
from lib_merge.recipe.params import check_range
from lib_merge.recipe.vectors import BlockVector, parse_vector

_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")


@dataclass
class BoundRecipe:
    root: Node  # model paths as displayed in the canonical recipe, vectors resolved
    sources: dict[ModelRef, SourceModel]
    schema: BlockSchema | None
    notes: list[str] = field(default_factory=list)
    # rebasin(B, ref=A) nodes: B read through its permutations, by (B, A, max_sweeps)
    permuted: dict[tuple[ModelRef, ModelRef, int], PermutedModel] = field(default_factory=dict)

    def permuted_for(self, node: MergeNode) -> PermutedModel:
        return self.permuted[_rebasin_identity(node)]

    @property
    def models(self) -> list[ModelRef]:
        return walk_models(self.root)

    @property
    def primary(self) -> SourceModel:
        return self.sources[self.models[0]]

    @property
    def arch(self) -> ArchInfo:
        return self.primary.arch

    def role(self, ref: ModelRef) -> str:
        return role_name(self.models.index(ref))

    def close(self) -> None:
        for s in set(self.sources.values()):
            s.close()

    def __enter__(self) -> BoundRecipe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_model_path(path: str, models_dir: str | None) -> str:
    """A recipe's model path: absolute, relative to the models folder, or a checkpoint title."""
    candidates = [path, _TITLE_HASH.sub("", path)]
    base = models_dir or os.environ.get("ALLOY_MODELS_DIR") or "."
    for c in candidates:
        full = c if os.path.isabs(c) else os.path.join(base, c)
        if os.path.isfile(full):
            return os.path.abspath(full)
    raise ModelNotFoundError(f"model not found: {path!r} (looked in {os.path.abspath(base)})")


def display_path(path: str, models_dir: str | None) -> str:
    """The path relative to the models folder when it lies there (as listed, or after following links)."""
    folder = models_dir or os.environ.get("ALLOY_MODELS_DIR") or "."
    for resolve in (os.path.abspath, os.path.realpath):
        full, base = resolve(path), resolve(folder)
        if full.startswith(base + os.sep):
            return os.path.relpath(full, base).replace(os.sep, "/")
    return os.path.realpath(path).replace(os.sep, "/")


def bind_recipe(root: Node, models_dir: str | None = None) -> BoundRecipe:
    unfilled = open_params(root)
    if unfilled:
        raise RecipeError(f"recipe has unfilled parameters: {', '.join(unfilled)}")
    refs = walk_models(root)
    opened: dict[str, SourceModel] = {}
    bound_refs: dict[ModelRef, ModelRef] = {}
    sources: dict[ModelRef, SourceModel] = {}
    try:
        for ref in refs:
            path = resolve_model_path(ref.path, models_dir)
            real = os.path.realpath(path)
            if real not in opened:
                opened[real] = SourceModel(path)
            new_ref = ModelRef(display_path(path, models_dir), ref.sha256)
            bound_refs[ref] = new_ref
            sources[new_ref] = opened[real]
        ordered = [bound_refs[r] for r in refs]
        references = [bound_refs[r] for r in _reference_only(root)]
        _check_compatible([(r, sources[r]) for r in ordered if r not in references])
        _check_references([sources[r] for r in references], sources[ordered[0]])
        schema = schema_for(sources[ordered[0]].arch.id)
        notes: list[str] = []
        primary = sources[ordered[0]]
        notes += _prediction_notes([(r, sources[r]) for r in ordered if r not in references])
        loras = _lora_binder(primary, models_dir, notes)
        new_root = _rebuild(root, bound_refs, schema, primary.arch, notes, loras)
        return BoundRecipe(new_root, sources, schema, notes, _permuted_models(new_root, sources))
    except BaseException:
        for s in opened.values():
            s.close()
        raise


def _lora_binder(primary: SourceModel, models_dir: str | None, notes: list[str]):
    """lora(…) refs → LoRAs read, hashed and matched to the primary model's keys."""

    def bind(ref: LoraRef) -> BoundLora:
        if not ref.path:
            raise RecipeError("lora(): name the LoRA file")
        bound = bind_lora(ref, resolve_model_path(ref.path, models_dir), primary.shapes, primary.name)
        if bound.unmatched:
            shown = ", ".join(bound.unmatched[:3]) + (", …" if len(bound.unmatched) > 3 else "")
            notes.append(f"{ref.path}: {len(bound.unmatched)} modules not found in {primary.name}: {shown}")
        return bound

    return bind


def _rebasin_identity(node: MergeNode) -> tuple[ModelRef, ModelRef, int]:
    model, ref = node.inputs
    return model, ref, int(node.params["max_sweeps"])


def _permuted_models(root: Node, sources: dict[ModelRef, SourceModel]) -> dict:
    """A PermutedModel per distinct rebasin(B, ref=A) of the recipe (header reads only: groups, shapes)."""
    permuted: dict[tuple[ModelRef, ModelRef, int], PermutedModel] = {}
    for node in walk_merges(root):
        if not METHODS[node.method].references:
            continue
        if not all(isinstance(i, ModelRef) for i in node.inputs):
            raise RecipeError(f"{node.method}(): both models must be model files, not merges")
        identity = _rebasin_identity(node)
        if identity not in permuted:
            model, ref, sweeps = identity
            permuted[identity] = PermutedModel(sources[model], sources[ref], sweeps)
    return permuted


def _rebuild(node: Node, refs: dict[ModelRef, ModelRef], schema, arch: ArchInfo, notes: list[str], loras=None) -> Node:
    if isinstance(node, ModelRef):
        return refs[node]
    params = {}
    for name, value in node.params.items():
        if isinstance(value, (Elemental, KeyFilter)):
            if schema is None:
                raise BlockSchemaError(f"{arch.label} has no blocks: elemental rules and include/exclude need them")
            fine = SCHEMAS[schema.fine].slots if schema.fine else ()
            value = value.bind(schema.names_with_vae(), schema.label, fine)
        elif isinstance(value, AdjustValues):
            value = value.bind(arch.id)
        elif isinstance(value, (LoraRef, BoundLora)):  # a bound one again: a saved merge's recipe
            value = loras(value if isinstance(value, LoraRef) else value.ref)
        if isinstance(value, BlocksSpec):
            if schema is None:
                raise BlockSchemaError(f"{arch.label} has no blocks: block weights cannot be used")
            parsed = parse_vector(
                list(value.spec) if isinstance(value.spec, tuple) else value.spec, schema, value.default
            )
            notes.extend(parsed.notes)
            value = parsed.vector
        params[name] = value
    _check_ranges(node.method, params)
    inputs = tuple(_rebuild(i, refs, schema, arch, notes, loras) for i in node.inputs)
    return MergeNode(node.method, inputs, params)


def _check_ranges(method: str, params: dict) -> None:
    """Every number of every step, block vectors included, is checked before any read: finite, and inside
    its hard range (extract's α/β/γ, tensor's α/β, seeds; ±MAX_MAGNITUDE for weights)."""
    spec = METHODS[method]
    for p in spec.params:
        if not p.numeric or p.name not in params:
            continue
        value = params[p.name]
        if isinstance(value, BlockVector):
            values = list(value.values) + ([value.vae] if value.vae is not None else [])
        elif isinstance(value, (list, tuple)):
            values = [float(v) for v in value]
        else:
            values = [float(value)]
        check_range(method, p, values)


def _reference_only(root: Node) -> list[ModelRef]:
    """Models used only as a re-basin reference (ref=): matched against, never merged."""
    merged: list[ModelRef] = []
    references: list[ModelRef] = []

    def visit(node: Node, as_reference: bool) -> None:
        if isinstance(node, ModelRef):
            (references if as_reference else merged).append(node)
        elif isinstance(node, MergeNode):
            plain = METHODS[node.method].per_key_inputs
            for i, child in enumerate(node.inputs):
                visit(child, as_reference or i >= plain)

    visit(root, False)
    return [r for r in dict.fromkeys(references) if r not in merged]


def _check_references(references: list[SourceModel], primary: SourceModel) -> None:
    """A reference needs the primary's architecture; its input channels do not matter (the input conv is in no
    permutation group)."""
    for source in references:
        if source.arch.id != primary.arch.id:
            raise ArchMismatchError(
                f"re-basin reference {_describe(source)} and {_describe(primary)} are of different architectures"
            )


def _own_keys(source: SourceModel) -> str | None:
    """The key data of a variant whose keys and shapes are its own, else None."""
    arch = source.arch.arch
    named = arch.named_variants.get(source.arch.variant) if arch else None
    return named[2] or None if named else None


def _describe(source: SourceModel) -> str:
    return f"{source.arch.label} ({source.path})"


def _prediction_notes(models: list[tuple[ModelRef, SourceModel]]) -> list[str]:
    """One warning when the inputs disagree on what the model predicts: the merge keeps A's markers
    (v_pred, ztsnr keys and modelspec's prediction type), which decide how the WebUI samples it."""
    (_, a), rest = models[0], models[1:]
    differ = [
        f"{role_name(i)} {_predicts(o)}" for i, (_, o) in enumerate(rest, 1) if o.arch.prediction != a.arch.prediction
    ]
    if not differ:
        return []
    return [f"warning: model A is {_predicts(a)} but {', '.join(differ)}: the merge keeps A's prediction markers"]


def _predicts(source: SourceModel) -> str:
    info = source.arch
    return f"{info.prediction} ({info.prediction_source})"


def _check_compatible(models: list[tuple[ModelRef, SourceModel]]) -> None:
    """One architecture; the primary may have extra input channels, never fewer."""
    (_, a), rest = models[0], models[1:]
    for i, (_, other) in enumerate(rest, 1):
        role = role_name(i)
        if other.arch.id != a.arch.id:
            raise ArchMismatchError(
                f"model A is {_describe(a)}, model {role} is {_describe(other)}: "
                "models of different architectures cannot be merged"
            )
        if _own_keys(a) != _own_keys(other):  # SD3 medium and SD3.5 medium: one family, other tensors
            raise ArchMismatchError(
                f"model A is {_describe(a)}, model {role} is {_describe(other)}: their tensors differ in shape"
            )
        ca, co = a.arch.input_channels, other.arch.input_channels
        if ca is None or co is None or ca == co:
            continue
        if co == 4:
            continue  # A has extra channels (inpainting/pix2pix); they keep A
        if ca == 4:
            raise ArchMismatchError(
                f"model A has 4 input channels but model {role} is an {other.arch.variant} model ({co} channels). "
                f"Put the {other.arch.variant} model in A (its extra channels are kept), or use add difference "
                f"A={other.arch.variant}, B=your model, C=the base model"
            )
        raise ArchMismatchError(
            f"model A is {a.arch.label} ({ca} input channels), model {role} is {other.arch.label} "
            f"({co} channels): they cannot be merged"
        )


def hashed_recipe(bound: BoundRecipe, progress: ProgressFn | None = None) -> HashedRecipe:
    """The bound recipe with every model's sha256 (remembered by the source, from the hash cache, or
    computed now) checked and filled in, with its canonical text and hash."""
    hashes = {
        ref: bound.sources[ref].sha256(hashing_progress(progress, bound.sources[ref].name)) for ref in bound.models
    }
    return HashedRecipe.of(with_hashes(bound, hashes))


def canonical_recipe(root: Node, models_dir: str | None = None, progress: ProgressFn | None = None) -> HashedRecipe:
    """A recipe bound just to read its models' hashes: its canonical text and hash."""
    with bind_recipe(root, models_dir) as bound:
        return hashed_recipe(bound, progress)


def with_hashes(bound: BoundRecipe, hashes: dict[ModelRef, str], verify: bool = True) -> Node:
    """The root with every model's sha256 filled in; with `verify`, a recipe's own sha256 must match."""
    for ref in bound.models:
        if verify and ref.sha256 and ref.sha256 != hashes[ref]:
            raise ModelHashMismatchError(
                f"model {bound.role(ref)} ({bound.sources[ref].path}) has sha256 {hashes[ref]}, "
                f"but the recipe expects {ref.sha256}"
            )
    filled = {ref: ModelRef(ref.path, hashes[ref]) for ref in bound.models}

    def rebuild(node: Node) -> Node:
        if isinstance(node, ModelRef):
            return filled[node]
        return MergeNode(node.method, tuple(rebuild(i) for i in node.inputs), node.params)

    return rebuild(bound.root)
