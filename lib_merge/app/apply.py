"""One call that merges a recipe into a loaded model: the seam for a host without a Workbench.

A ComfyUI node (or any other host) holds a model whose tensors have the checkpoint's names, or a
`PatchTarget` mapping checkpoint keys onto its own tensors, and calls `apply_recipe`. The Workbench
makes its live merges through the same call, so both give the same tensors for the same recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_merge.app.lora import confine_loras
from lib_merge.engine.bind import BoundRecipe, bind_recipe
from lib_merge.engine.live import LiveBackup, LiveResult, PatchTarget, merge_into_model
from lib_merge.engine.options import EngineOptions
from lib_merge.recipe import parse_recipe
from lib_merge.recipe.nodes import ModelRef, Node, replace_models


@dataclass
class ApplyOptions:
    """How `apply_recipe` reads, computes and keeps model A; the defaults suit a one-off call."""

    engine: EngineOptions | None = None  # device, compute dtype, RAM cache, cancel, progress
    # Model A's values, kept across calls on one target: the next call starts from A again, and
    # `backup.restore(target)` gives A back. A fresh one takes the target as it is now for model A.
    backup: LiveBackup = field(default_factory=LiveBackup)
    skip_prefixes: tuple[str, ...] = ()  # keys the host keeps from elsewhere (an external VAE)
    models_dir: str | None = None  # relative model paths of the recipe are read from here
    lora_folder: str | None = None  # LoRA files the recipe names are looked up here only; None: as written


def resolve_recipe(root: Node, resolve: Callable[[str], str] | None, lora_folder: str | None) -> Node:
    """The recipe with the host's names of its models turned into files (`resolve`) and its LoRAs looked
    up inside `lora_folder`: a recipe from a user names no file elsewhere on the disk."""
    if resolve is not None:
        root = replace_models(root, lambda ref: ModelRef(resolve(ref.path), ref.sha256))
    return confine_loras(root, lora_folder) if lora_folder is not None else root


def apply_recipe(
    recipe: str | Node | BoundRecipe,
    target: torch.nn.Module | PatchTarget,
    *,
    resolve: Callable[[str], str] | None = None,
    options: ApplyOptions | None = None,
) -> LiveResult:
    """Merge `recipe` (its text, its nodes, or a recipe bound already) into `target`, which holds model A,
    in place; an earlier apply with the same `options.backup` is undone where this one does not write.

    `resolve` turns a model name of the recipe into its file (the host's checkpoint titles). A bound
    recipe is used as it is and stays open (the Workbench's one bind of a merge); anything else is bound
    here and closed. All or nothing: a failed or cancelled merge leaves model A in `target`."""
    options = options or ApplyOptions()
    if isinstance(recipe, BoundRecipe):
        return merge_into_model(recipe, target, options.backup, options.engine, skip_prefixes=options.skip_prefixes)
    root = parse_recipe(recipe) if isinstance(recipe, str) else recipe
    root = resolve_recipe(root, resolve, options.lora_folder)
    with bind_recipe(root, options.models_dir) as bound:
        return apply_recipe(bound, target, options=options)
