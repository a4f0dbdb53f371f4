"""Merging a recipe into a safetensors file: the library's main entry point.

Input hashes (needed for the recipe and metadata) are computed in a background thread
while the merge runs; the header is written last into space reserved up front.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from lib_merge.arch.layouts import SINGLE_FILE
from lib_merge.engine.bind import BoundRecipe, bind_recipe, with_hashes
from lib_merge.engine.layout_choice import left_out, output_layout
from lib_merge.engine.metadata import build_metadata
from lib_merge.engine.options import EngineOptions, EngineReport
from lib_merge.engine.plan import KeyJob, MergePlan, plan_merge
from lib_merge.engine.progress import hashing_progress
from lib_merge.engine.run import run_plan
from lib_merge.errors import SourceChangedError, UnsafePathError
from lib_merge.io.dtypes import is_fp8
from lib_merge.io.layouts import LayoutSink
from lib_merge.io.source import SourceModel
from lib_merge.io.tempfiles import check_new_output, clean_stale, format_for_output, write_file
from lib_merge.io.writer import FileSink, PlannedTensor, check_free_space
from lib_merge.recipe.hashed import CarriesRecipe, HashedRecipe
from lib_merge.recipe.nodes import ModelRef, Node

_PLACEHOLDER_HASH = "0" * 64


@dataclass
class SaveOptions:
    output: str
    dtype: torch.dtype = torch.float16
    overwrite: bool = False
    prune: bool = True
    metadata: bool = True
    format: str | None = None  # "safetensors", or "ckpt": a pickled {"state_dict": …}, no metadata;
    # None: the output's ending decides (io.tempfiles.format_for_output)
    clamp: bool = False  # fp8 output: clamp values beyond the format's range (else the key is refused)
    layout: str | None = None  # arch.layouts; None: the inputs' own (inputs in different layouts are refused)


@dataclass
class MergeResult(CarriesRecipe):
    path: str
    recipe: HashedRecipe
    report: EngineReport
    plan: MergePlan
    notes: list[str] = field(default_factory=list)

    def models_text(self) -> str:
        return self.recipe.models_column()


# Called with the result and the (device, inode) of the finished temporary file, just before the
# file takes its name: the history promises its row there (history.pending).
PublishHook = Callable[[MergeResult, tuple[int, int]], None]


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class CkptSink:
    """Collects the merge and saves it as {"state_dict": …} with torch.save; the recipe goes to history only.

    Pickle needs the whole dict at once, so this format holds the merged model in RAM.
    """

    def __init__(self, target: str, overwrite: bool = False):
        self.target = target
        self.overwrite = overwrite
        self.tensors: dict[str, torch.Tensor] = {}
        self.data_sha256 = "0" * 64  # not a safetensors data section; .ckpt files carry no metadata

    def begin(self, plan: list[PlannedTensor]) -> None:
        check_free_space(os.path.dirname(self.target), sum(p.nbytes for p in plan))
        self.tensors = {}

    def put(self, key: str, tensor: torch.Tensor) -> None:
        self.tensors[key] = tensor.clone() if not tensor.is_contiguous() else tensor

    def abort(self) -> None:
        self.tensors = {}

    def finish(self, metadata: dict[str, str], before_publish: Callable[[os.stat_result], None] | None = None) -> str:
        def save(f) -> None:
            torch.save({"state_dict": self.tensors}, f)

        try:
            return write_file(self.target, save, self.overwrite, before_publish)
        finally:
            self.tensors = {}


def check_output_path(output: str, bound: BoundRecipe, overwrite: bool, file_format: str) -> str:
    """Never replace an input; replace an existing file only when asked; the ending fits the format."""
    target = os.path.abspath(output)
    if os.path.isfile(target):  # named by role here; the folder and overwrite rules are the shared ones
        for ref in bound.models:
            source = bound.sources[ref]
            if os.path.samefile(target, source.path):
                raise UnsafePathError(f"output would overwrite input model {bound.role(ref)} ({source.path})")
    return check_new_output(target, [], overwrite, writes=file_format)


def merge_to_file(
    recipe: Node | BoundRecipe,
    save: SaveOptions,
    engine: EngineOptions | None = None,
    models_dir: str | None = None,
    before_publish: PublishHook | None = None,
) -> MergeResult:
    """Merge a recipe into the file `save.output`; stale temporary files of dead processes in its
    folder are removed first (a note says how much that freed).

    A BoundRecipe is used as it is and stays open (its owner closes it); a node is bound here.
    """
    if not isinstance(recipe, BoundRecipe):
        with bind_recipe(recipe, models_dir) as bound:
            return merge_to_file(bound, save, engine, models_dir, before_publish)
    bound = recipe
    notes = list(bound.notes)
    file_format = format_for_output(save.output, save.format)
    target = check_output_path(save.output, bound, save.overwrite, file_format)
    roles = [bound.role(r) for r in bound.models]
    layout = output_layout([bound.sources[r] for r in bound.models], roles, save.layout)
    cleaned = clean_stale(os.path.dirname(target))
    if cleaned.removed:
        notes.append(cleaned.text(os.path.dirname(target)))
    plan = keep_stored_fp8(plan_merge(bound, save.dtype, prune=save.prune))
    engine = dataclasses.replace(engine or EngineOptions(), clamp=save.clamp)
    hasher = ThreadPoolExecutor(1, thread_name_prefix="alloy-hash")
    try:
        progress = engine.progress if engine else None
        futures = {
            ref: hasher.submit(bound.sources[ref].sha256, hashing_progress(progress, bound.sources[ref].name))
            for ref in bound.models
        }
        # Distinct stand-ins of the final length, so the header size estimate is exact.
        placeholder = {ref: f"{i + 1:064x}" for i, ref in enumerate(bound.models)}
        estimate = _metadata(bound, placeholder, target, save, _PLACEHOLDER_HASH)[0]
        sink = CkptSink(target, save.overwrite) if file_format == "ckpt" else FileSink(target, estimate, save.overwrite)
        if layout != SINGLE_FILE:
            sink = LayoutSink(sink, layout)
            dropped = left_out(layout, plan.tensors)
            if dropped:
                notes.append(
                    f"{dropped} text encoder and VAE tensors left out: the {layout} layout holds the transformer alone"
                )
        report = run_plan(plan, sink, engine)
        notes.extend(report.notes)
        try:
            hashes = {ref: f.result() for ref, f in futures.items()}
            _check_unchanged(bound)
            metadata, hashed = _metadata(bound, hashes, target, save, sink.data_sha256)
            result = MergeResult(target, hashed, report, plan, notes)
            hook = (lambda st: before_publish(result, _identity(st))) if before_publish else None
            result.path = sink.finish(metadata, hook)
        except BaseException:
            sink.abort()
            raise
    finally:
        hasher.shutdown(cancel_futures=True)  # a failed merge does not wait for hashes it won't use
    return result


def keep_stored_fp8(plan: MergePlan) -> MergePlan:
    """Keys the merge leaves as one model's fp8 tensor keep that tensor's bytes (no cast to the output
    dtype): a Flux file's fp8 T5 stays as it came when only the diffuser is merged. (A scaled fp8 weight
    reads as fp32, so it is written dequantised in the output dtype; its scale keys are never copied.)"""
    jobs = []
    for job in plan.jobs:
        leaf = job.tree
        if job.cast and isinstance(leaf, SourceModel) and not job.inpaint_channels:
            stored = leaf.info(job.key)
            if is_fp8(stored.dtype):
                job = KeyJob(job.key, PlannedTensor(job.key, stored.dtype, job.out.shape), leaf, False, job.slot)
        jobs.append(job)
    return dataclasses.replace(plan, jobs=jobs)


def _metadata(bound: BoundRecipe, hashes: dict[ModelRef, str], target: str, save: SaveOptions, data_sha: str):
    hashed = HashedRecipe.of(with_hashes(bound, hashes, verify=data_sha != _PLACEHOLDER_HASH))
    if not save.metadata:
        return {"format": "pt"}, hashed
    meta = build_metadata(bound, hashed.root, hashed.text, hashed.digest, hashes, target, save.dtype, data_sha)
    return meta, hashed


def _check_unchanged(bound: BoundRecipe) -> None:
    for ref in bound.models:
        source = bound.sources[ref]
        st = os.stat(source.path)
        if (st.st_size, st.st_mtime_ns) != source.identity():
            raise SourceChangedError(f"{source.path} changed on disk during the merge")
