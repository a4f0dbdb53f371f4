"""Copy tensors from open models into a new safetensors file, key by key, with a dtype change.

Every Toolkit operation that writes (prune, convert, extract, replace, build) is a list of
`Copy` entries: where each output tensor comes from and its dtype. Only one tensor is in memory at
a time; the file appears whole or not at all (io/writer.py). Casting to fp16 checks the range:
values beyond ±65504 stop the copy (PrecisionError naming the key) unless clamping is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_merge.errors import PrecisionError
from lib_merge.io.dtypes import is_fp8
from lib_merge.io.fp8 import fp8_max, to_fp8
from lib_merge.io.source import SourceModel
from lib_merge.io.writer import PlannedTensor, SafetensorsWriter

FP16_MAX = 65504.0
_WIDER_THAN_FP16 = (torch.float32, torch.float64, torch.bfloat16)  # fp8 never exceeds fp16's range
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Copy:
    key: str  # the output key
    source: SourceModel
    source_key: str  # canonical key in the source
    dtype: torch.dtype
    replacement: torch.Tensor | None = None  # written instead of the source's tensor (a fixed position_ids)


@dataclass
class RewriteReport:
    path: str
    keys: int
    bytes: int
    clamped: dict[str, int] = field(default_factory=dict)  # key -> elements clamped to the dtype's range
    clamp_limit: float = FP16_MAX  # the range they were clamped to (±448 or ±57344 when writing fp8)


def out_dtype(tensor_dtype: torch.dtype, wanted: torch.dtype | None, key: str) -> torch.dtype:
    """Floating tensors take the wanted dtype (None: keep); integers and position_ids keep theirs."""
    if wanted is None or not tensor_dtype.is_floating_point or key.endswith("position_ids"):
        return tensor_dtype
    return wanted


def rewrite(
    target: str,
    copies: list[Copy],
    metadata: dict[str, str],
    overwrite: bool = False,
    clamp: bool = False,
    progress: Progress | None = None,
) -> RewriteReport:
    """Write `copies` in order to `target`; `modelspec.hash_sha256` in the metadata is set to the new data's."""
    plan = [PlannedTensor(c.key, c.dtype, _shape(c)) for c in copies]
    writer = SafetensorsWriter(target, plan, {**metadata, "modelspec.hash_sha256": "0x" + "0" * 64}, overwrite)
    clamped: dict[str, int] = {}
    try:
        writer.open()
        for done, c in enumerate(copies, 1):
            if c.replacement is not None:
                writer.write(c.key, _cast(c.replacement, c.dtype, c.key, clamp, clamped))
            else:
                try:  # a view of the file's bytes: cast into a new tensor, or written as it is
                    writer.write(c.key, _cast(c.source.view(c.source_key), c.dtype, c.key, clamp, clamped))
                finally:
                    c.source.release(c.source_key)
            if progress is not None:
                progress(done, len(copies))
        final = dict(metadata)
        if "modelspec.hash_sha256" in final:
            final["modelspec.hash_sha256"] = "0x" + writer.data_sha256
        path = writer.finish(final)
    except BaseException:
        writer.abort()
        raise
    fp8 = [c.dtype for c in copies if is_fp8(c.dtype)]
    return RewriteReport(path, len(copies), writer.data_bytes, clamped, fp8_max(fp8[0]) if fp8 else FP16_MAX)


def _shape(c: Copy) -> tuple[int, ...]:
    return tuple(c.replacement.shape) if c.replacement is not None else tuple(c.source.info(c.source_key).shape)


def _cast(tensor: torch.Tensor, dtype: torch.dtype, key: str, clamp: bool, clamped: dict[str, int]) -> torch.Tensor:
    if tensor.dtype == dtype:
        return tensor
    if is_fp8(dtype):  # fp8 keeps its own range check: beyond ±max is refused naming the key, or clamped
        wide = tensor.float()
        if clamp:
            beyond = int((wide.abs() > fp8_max(dtype)).sum())
            if beyond:
                clamped[key] = beyond
        return to_fp8(wide, dtype, key, clamp)
    if dtype == torch.float16 and tensor.dtype in _WIDER_THAN_FP16 and tensor.numel():
        low, high = torch.aminmax(tensor)  # one pass, no copy; the count only when something overflows
        if float(low) < -FP16_MAX or float(high) > FP16_MAX:
            wide = tensor.float()
            if not clamp:
                top = max(-float(low), float(high))
                raise PrecisionError(
                    f"key {key} has values up to {top:.3g} which overflow fp16; use bf16 or fp32 (or clamp)"
                )
            clamped[key] = int((wide.abs() > FP16_MAX).sum())
            return wide.clamp(-FP16_MAX, FP16_MAX).to(dtype)
    return tensor.to(dtype)
