"""Merging a recipe into a safetensors file: the library's main entry point.

Input hashes (needed for the recipe and metadata) are computed in a background thread
while the merge runs; the header is written last into space reserved up front.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from lib_merge.engine.bind import BoundRecipe, bind_recipe, with_hashes
from lib_merge.engine.plan import MergePlan, plan_merge
from lib_merge.engine.run import EngineOptions, EngineReport, run_plan
from lib_merge.errors import OutputExistsError, SourceChangedError, UnsafePathError
from lib_merge.io.writer import PlannedTensor, SafetensorsWriter, check_free_space, temp_path_for
from lib_merge.metadata import build_metadata
from lib_merge.recipe.nodes import ModelRef, Node
from lib_merge.recipe.printer import print_recipe, recipe_hash

_PLACEHOLDER_HASH = "0" * 64


@dataclass
class SaveOptions:
    output: str
    dtype: torch.dtype = torch.float16
    overwrite: bool = False
    prune: bool = True
    metadata: bool = True
    format: str = "safetensors"  # or "ckpt": a pickled {"state_dict": …}, no metadata


@dataclass
class MergeResult:
    path: str
    recipe_text: str
    recipe_hash: str
    report: EngineReport
    plan: MergePlan
    notes: list[str] = field(default_factory=list)
    models: list[tuple[str, str, str]] = field(default_factory=list)  # (role, file name, sha256)

    def models_text(self) -> str:
        """History's models column: 'A=base.safetensors [6ce0161689];B=…'."""
        return ";".join(f"{role}={name} [{sha[:10]}]" for role, name, sha in self.models)


class FileSink:
    """Engine sink that streams into a SafetensorsWriter."""

    def __init__(self, target: str, metadata_estimate: dict[str, str]):
        self.target = target
        self.metadata_estimate = metadata_estimate
        self.writer: SafetensorsWriter | None = None

    def begin(self, plan: list[PlannedTensor]) -> None:
        self.writer = SafetensorsWriter(self.target, plan, self.metadata_estimate)

    def put(self, key: str, tensor: torch.Tensor) -> None:
        self.writer.write(key, tensor)

    def abort(self) -> None:
        if self.writer:
            self.writer.abort()

    @property
    def data_sha256(self) -> str:
        return self.writer.data_sha256

    def finish(self, metadata: dict[str, str]) -> str:
        return self.writer.finish(metadata)


class CkptSink:
    """Collects the merge and saves it as {"state_dict": …} with torch.save; the recipe goes to history only.

    Pickle needs the whole dict at once, so this format holds the merged model in RAM.
    """

    def __init__(self, target: str):
        self.target = target
        self.tensors: dict[str, torch.Tensor] = {}
        self.data_sha256 = "0" * 64  # not a safetensors data section; .ckpt files carry no metadata

    def begin(self, plan: list[PlannedTensor]) -> None:
        check_free_space(os.path.dirname(self.target), sum(p.nbytes for p in plan))
        self.tensors = {}

    def put(self, key: str, tensor: torch.Tensor) -> None:
        self.tensors[key] = tensor.clone() if not tensor.is_contiguous() else tensor

    def abort(self) -> None:
        self.tensors = {}

    def finish(self, metadata: dict[str, str]) -> str:
        tmp = temp_path_for(self.target)
        try:
            with open(tmp, "wb") as f:
                torch.save({"state_dict": self.tensors}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        finally:
            self.tensors = {}
        return self.target


def check_output_path(output: str, bound: BoundRecipe, overwrite: bool) -> str:
    """SPEC §6.6: never replace an input; replace an existing file only when asked."""
    target = os.path.abspath(output)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise UnsafePathError(f"output folder does not exist: {folder}")
    if os.path.exists(target):
        for ref in bound.models:
            source = bound.sources[ref]
            if os.path.samefile(target, source.path):
                raise UnsafePathError(f"output would overwrite input model {bound.role(ref)} ({source.path})")
        if not overwrite:
            raise OutputExistsError(f"{target} exists; choose another name or use --overwrite")
    return target


def merge_to_file(
    root: Node,
    save: SaveOptions,
    engine: EngineOptions | None = None,
    models_dir: str | None = None,
) -> MergeResult:
    bound = bind_recipe(root, models_dir)
    try:
        target = check_output_path(save.output, bound, save.overwrite)
        plan = plan_merge(bound, save.dtype, prune=save.prune)
        hasher = ThreadPoolExecutor(1, thread_name_prefix="alloy-hash")
        try:
            futures = {ref: hasher.submit(bound.sources[ref].sha256) for ref in bound.models}
            # Distinct stand-ins of the final length, so the header size estimate is exact.
            placeholder = {ref: f"{i + 1:064x}" for i, ref in enumerate(bound.models)}
            estimate = _metadata(bound, placeholder, target, save, _PLACEHOLDER_HASH)[0]
            sink = CkptSink(target) if save.format == "ckpt" else FileSink(target, estimate)
            report = run_plan(plan, sink, engine)
            try:
                hashes = {ref: f.result() for ref, f in futures.items()}
                _check_unchanged(bound)
                metadata, text, digest = _metadata(bound, hashes, target, save, sink.data_sha256)
                path = sink.finish(metadata)
            except BaseException:
                sink.abort()
                raise
        finally:
            hasher.shutdown(cancel_futures=True)  # a failed merge does not wait for hashes it won't use
        models = [(bound.role(r), bound.sources[r].name, hashes[r]) for r in bound.models]
        return MergeResult(path, text, digest, report, plan, bound.notes, models)
    finally:
        bound.close()


def _metadata(bound: BoundRecipe, hashes: dict[ModelRef, str], target: str, save: SaveOptions, data_sha: str):
    root = with_hashes(bound, hashes, verify=data_sha != _PLACEHOLDER_HASH)
    text = print_recipe(root)
    digest = recipe_hash(root)
    if not save.metadata:
        return {"format": "pt"}, text, digest
    meta = build_metadata(bound, root, text, digest, hashes, target, save.dtype, data_sha)
    return meta, text, digest


def _check_unchanged(bound: BoundRecipe) -> None:
    for ref in bound.models:
        source = bound.sources[ref]
        st = os.stat(source.path)
        if (st.st_size, st.st_mtime_ns) != source.identity():
            raise SourceChangedError(f"{source.path} changed on disk during the merge")
