"""Prune, convert and fix position_ids: one checkpoint (or component file) rewritten as safetensors.

Prune keeps the architecture's components and prediction markers (EMA on request) and drops the rest
(schedule buffers, embedding_manager, trainer leftovers, duplicates); convert keeps every tensor and
changes the dtype only. Both may reset CLIP-L position_ids to arange(77) and report what was broken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from lib_merge.errors import ArchMismatchError
from lib_merge.io.dtypes import parse_output_dtype
from lib_merge.io.source import SourceModel
from lib_merge.io.tempfiles import check_new_output, format_bytes
from lib_merge.toolkit.layout import component_file, kept_by_prune
from lib_merge.toolkit.rewrite import Copy, Progress, RewriteReport, out_dtype, rewrite

POSITION_IDS = (
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
    "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
    "text_encoders.clip_l.transformer.text_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",  # a CLIP-L component file
)


@dataclass
class RewriteOptions:
    """What prune and convert do besides copying: the dtype (None: keep), EMA, position_ids, clamping."""

    dtype: torch.dtype | None = torch.float16
    prune: bool = True
    keep_ema: bool = False
    fix_position_ids: bool = False
    clamp: bool = False
    overwrite: bool = False


@dataclass
class PositionIdsReport:
    key: str
    dtype: str
    broken: list[tuple[int, float]]  # (index, value) where round(value) != index or value is no integer

    def text(self) -> str:
        if not self.broken:
            return f"{self.key}: fine ({self.dtype})"
        shown = ", ".join(f"{v:g} at {i}" for i, v in self.broken[:5])
        return f"{self.key}: broken: {len(self.broken)} ({shown}{', …' if len(self.broken) > 5 else ''})"


@dataclass
class PruneReport:
    written: RewriteReport
    keys_before: int
    bytes_before: int
    dropped_entries: list[str] = field(default_factory=list)  # .ckpt entries that are no tensors
    position_ids: list[PositionIdsReport] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        w = self.written
        out = [f"{self.keys_before:,} → {w.keys:,} keys, {format_bytes(self.bytes_before)} → {format_bytes(w.bytes)}"]
        out += [f"fixed {r.text()}" for r in self.position_ids if r.key in self.fixed]
        out += [f"clamped {n} values of {key} to ±{w.clamp_limit:g}" for key, n in w.clamped.items()]
        if self.dropped_entries:
            out.append("dropped entries that are no tensors: " + ", ".join(self.dropped_entries[:10]))
        return out


def rewrite_dtype(name: str) -> torch.dtype | None:
    """A dtype name as prune and convert take it: the output dtypes, or "keep" (None)."""
    return None if name == "keep" else parse_output_dtype(name)


def check_position_ids(source: SourceModel) -> list[PositionIdsReport]:
    """Each CLIP-L position_ids of the file, and where it differs from arange(77)."""
    found = []
    for key in POSITION_IDS:
        if key in source:
            values = source.read(key).double().flatten()
            expected = torch.arange(values.numel(), dtype=torch.float64)
            bad = (values.round() != expected) | (values != values.round())
            broken = [(int(i), float(values[i])) for i in torch.nonzero(bad).flatten()]
            found.append(PositionIdsReport(key, str(source.info(key).dtype).removeprefix("torch."), broken))
    return found


def default_output(path: str, suffix: str) -> str:
    stem = os.path.splitext(path)[0]
    return f"{stem}-{suffix}.safetensors"


def prune_file(path: str, output: str | None, options: RewriteOptions, progress: Progress | None = None) -> PruneReport:
    """Prune (options.prune) or convert `path` into a safetensors file."""
    source = SourceModel(path)
    try:
        target = check_new_output(output or default_output(path, "pruned" if options.prune else "converted"),
                                  [source.path], options.overwrite, writes="safetensors")  # fmt: skip
        keys = _kept_keys(source, options)
        positions = check_position_ids(source)
        fixes = {r.key: torch.arange(77, dtype=torch.int64)[None] for r in positions if options.fix_position_ids}
        copies = [_copy(source, k, options, fixes.get(k)) for k in keys]
        written = rewrite(target, copies, dict(source.metadata), options.overwrite, options.clamp, progress)
        dropped = list(getattr(source.file, "dropped", []))
        before = sum(source.info(k).nbytes for k in source.keys)
        fixed = [r.key for r in positions if options.fix_position_ids and r.broken]
        return PruneReport(written, len(source.keys), before, dropped, positions, fixed)
    finally:
        source.close()


def _copy(source: SourceModel, key: str, options: RewriteOptions, fixed: torch.Tensor | None) -> Copy:
    if fixed is not None:
        return Copy(key, source, key, fixed.dtype, fixed)
    return Copy(key, source, key, out_dtype(source.info(key).dtype, options.dtype, key))


def _kept_keys(source: SourceModel, options: RewriteOptions) -> list[str]:
    arch = source.arch.arch
    if not options.prune:
        return list(source.keys)
    if arch is None:
        if component_file(source.shapes) is not None:
            return list(source.keys)  # a component file is pruned to itself (dtype, position_ids)
        reasons = "; ".join(source.arch.rejected[:3])
        raise ArchMismatchError(f"{source.name}: no known architecture, so nothing can be pruned safely ({reasons})")
    return [k for k in source.keys if kept_by_prune(k, arch, options.keep_ema)]
