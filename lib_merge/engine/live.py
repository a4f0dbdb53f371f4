"""Merging into a loaded torch model in place, with an exact restore.

Host-independent: the WebUI adapter hands over its model object; the names of its
parameters equal the checkpoint's once every ``.wrapped`` segment (the WebUI's text-encoder
hijack) is removed. Each tensor is looked up when the patch starts, backed up once on the
CPU in its own dtype, and written with ``copy_`` under ``no_grad``, keeping dtype and device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from lib_merge.engine.bind import BoundRecipe, bind_recipe, hashed_recipe
from lib_merge.engine.options import EngineOptions, EngineReport
from lib_merge.engine.plan import MergePlan, plan_merge
from lib_merge.engine.run import run_plan
from lib_merge.errors import HostPatchError
from lib_merge.io.writer import PlannedTensor
from lib_merge.recipe.hashed import HashedRecipe
from lib_merge.recipe.nodes import Node


def canonical_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "wrapped")


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoint key -> the model's own tensor; a tensor reachable under two names is listed once."""
    found: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False)
    ):
        key = canonical_name(name)
        if key in found or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        found[key] = tensor
    return found


@dataclass
class LiveBackup:
    """Original values (CPU, own dtype) of every tensor patched since the model was loaded.

    The copies stay after a restore: they are still the loaded checkpoint's values, so the next
    merge need not copy them again. A new checkpoint load makes them void (a new LiveBackup).
    """

    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    patched: set[str] = field(default_factory=set)  # keys that differ from their original now

    def restore(self, model: torch.nn.Module) -> int:
        tensors = model_tensors(model)
        with torch.no_grad():
            for key in self.patched:
                tensors[key].copy_(self.originals[key])
        count = len(self.patched)
        self.patched.clear()
        return count


class LiveModelSink:
    """Engine sink that writes each merged tensor into the model's own parameter."""

    def __init__(self, model: torch.nn.Module, backup: LiveBackup):
        self.model = model
        self.backup = backup
        self.targets: dict[str, torch.Tensor] = {}
        self.patched: list[str] = []

    def begin(self, plan: list[PlannedTensor]) -> None:
        tensors = model_tensors(self.model)
        wanted = plan
        missing = [p.key for p in wanted if p.key not in tensors]
        wrong = [
            f"{p.key} {list(p.shape)} vs {list(tensors[p.key].shape)}"
            for p in wanted
            if p.key in tensors and tuple(tensors[p.key].shape) != p.shape
        ]
        if missing or wrong:
            listed = (missing + wrong)[:10]
            raise HostPatchError(
                f"the loaded model cannot take this merge ({len(missing)} keys missing, {len(wrong)} shapes differ): "
                + ", ".join(listed)
            )
        self.targets = {p.key: tensors[p.key] for p in wanted}

    def put(self, key: str, tensor: torch.Tensor) -> None:
        target = self.targets[key]
        with torch.no_grad():
            if key not in self.backup.originals:
                self.backup.originals[key] = target.detach().to("cpu", copy=True)
            self.backup.patched.add(key)
            target.copy_(tensor.to(target.device, target.dtype))
        self.patched.append(key)

    def abort(self) -> None:
        """All or nothing: a failed or cancelled merge puts back what it wrote."""
        with torch.no_grad():
            for key in self.patched:
                self.targets[key].copy_(self.backup.originals[key])
                self.backup.patched.discard(key)


@dataclass
class LiveResult:
    recipe: HashedRecipe
    patched: int
    report: EngineReport
    plan: MergePlan


def merge_into_model(
    recipe: Node | BoundRecipe,
    model: torch.nn.Module,
    backup: LiveBackup,
    engine: EngineOptions | None = None,
    models_dir: str | None = None,
    skip_prefixes: tuple[str, ...] = (),
) -> LiveResult:
    """Restore any earlier patch, then patch the merge of `root` into `model` (which holds A).

    Keys under `skip_prefixes` stay as they are (the host keeps them from elsewhere, e.g. an external VAE).
    A BoundRecipe is used as it is and stays open (its owner closes it); a node is bound here.
    """
    if not isinstance(recipe, BoundRecipe):
        with bind_recipe(recipe, models_dir) as bound:
            return merge_into_model(bound, model, backup, engine, models_dir, skip_prefixes)
    bound = recipe
    backup.restore(model)
    # fp32 results, rounded once to each parameter's own dtype by the sink.
    full = plan_merge(bound, torch.float32, prune=True)
    # Keys the merge leaves as A are already in the loaded model: nothing to read or write.
    jobs = [j for j in full.jobs if j.cast and j.tree is not bound.primary and not j.key.startswith(skip_prefixes)]
    plan = dataclasses.replace(full, jobs=jobs)
    sink = LiveModelSink(model, backup)
    report = run_plan(plan, sink, engine)
    hashed = hashed_recipe(bound, engine.progress if engine else None)
    return LiveResult(hashed, len(sink.patched), report, plan)
