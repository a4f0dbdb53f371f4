"""What runs before the keys are read: re-basin's matching, and the first pass of methods that need one.

Steps of such a method are grouped by their input models; each group reads its keys (VAE
excluded), the method's `finish` turns what was collected into parameters, and those are set
on every step of the group before the main pass starts. Results are remembered in the cache.
"""

from __future__ import annotations

import torch

from lib_merge.arch.blocks import VAE_SLOT
from lib_merge.engine.options import CancelToken, EngineOptions, EngineReport
from lib_merge.engine.plan import MergePlan, Step, is_leaf
from lib_merge.engine.progress import ProgressEvent
from lib_merge.engine.threads import worker_pool
from lib_merge.errors import UnsupportedError


def _steps(node) -> list[Step]:
    if is_leaf(node):
        return []
    return [s for i in node.inputs for s in _steps(i)] + [node]


def run_prepass(plan: MergePlan, options: EngineOptions, cancel: CancelToken) -> None:
    groups: dict[tuple, list[tuple[str, str | None, Step]]] = {}
    for job in plan.jobs:
        if not job.cast or is_leaf(job.tree):
            continue
        for step in _steps(job.tree):
            if step.method.prepass is None:
                continue
            if not all(is_leaf(i) for i in step.inputs):
                raise UnsupportedError(f"{step.method.name} takes models as its inputs, not merges")
            # A loaded model read from memory is named by its file (it has no cache identity of its own).
            ident = (step.method.name,) + tuple(getattr(i, "source", i).cache_identity for i in step.inputs)
            groups.setdefault(ident, []).append((job.key, job.slot, step))
    for ident, steps in groups.items():
        memo = options.cache.memo if options.cache is not None else {}
        if ident not in memo:
            memo[ident] = _collect(steps, options, cancel)
        params, prepared = memo[ident]
        for key, _, step in steps:
            step.params.update(params)
            if key in prepared:  # what the pre-pass computed for this key, not computed again
                step.params["prepared"] = prepared[key]


def _collect(
    steps: list[tuple[str, str | None, Step]], options: EngineOptions, cancel: CancelToken
) -> tuple[dict, dict]:
    """Every key of the group once, on the engine's threads (torch releases the GIL while it computes).

    Returns the parameters of the main pass and, for a method whose pre-pass gives (part, prepared)
    pairs, each key's prepared value."""
    method = steps[0][2].method

    def one(item: tuple[str, str | None, Step]):
        key, slot, step = item
        cancel.check()
        if slot == VAE_SLOT or (method.keeps_key is not None and method.keeps_key(key)):
            return None
        a, b = (source.view(key) for source in step.inputs)
        try:
            return method.prepass(a.to(options.device, torch.float32), b.to(options.device, torch.float32))
        finally:
            for source in step.inputs:
                source.release(key)

    parts, prepared = [], {}
    with worker_pool(options.threads, "alloy-prepass") as pool:
        for done, ((key, _, _), part) in enumerate(zip(steps, pool.map(one, steps)), 1):
            if isinstance(part, tuple):
                part, prepared[key] = part
            if part is not None:
                parts.append(part)
            if options.progress:
                options.progress(ProgressEvent(f"{method.name} pre-pass", done, len(steps), "tensors"))
    return method.finish(parts), prepared


def match_rebasin(plan: MergePlan, options: EngineOptions, cancel: CancelToken, report: EngineReport) -> None:
    """Re-basin inputs get their permutations (from the cache, or matched now) before any key is read."""
    for permuted in plan.permuted:

        def progress(done: int, total: int, name: str = permuted.name) -> None:
            if options.progress:
                options.progress(ProgressEvent("rebasin", done, total, "layers", item=name))

        report.notes.append(permuted.prepare(options.device, cancel.check, progress).note)
