"""Scaled fp8 files (ComfyUI's "scaled fp8" Flux/SD3/T5 checkpoints) seen as the values they stand for.

Such a file stores a weight `X.weight` in fp8 next to a scalar `X.scale_weight` (float32, shape [] or
[1]); the real value is `weight.float() * scale_weight`. Some files also carry a `scaled_fp8` marker
(top level or under the model's prefix) and `X.scale_input` (an activation scale for fp8 matmuls).

`ScaledFp8File` wraps the opened file so that everything above it (SourceModel, the planner, the
engine, the toolkit) sees each such weight as an fp32 tensor under its own key, and never sees the
scale keys or the marker: they are not merged as tensors and not copied into an output, which is
never written as scaled fp8 (the dequantised values are written in the output dtype instead).
"""

from __future__ import annotations

import math
import os

import torch

from lib_merge.errors import CorruptModelError
from lib_merge.io.dtypes import FP8_DTYPES
from lib_merge.io.safetensors_reader import TensorInfo

MARKER = "scaled_fp8"
SCALE_WEIGHT = ".scale_weight"
SCALE_INPUT = ".scale_input"


def is_scaled_fp8(tensors: dict[str, TensorInfo]) -> bool:
    """A `scaled_fp8` marker, or some fp8 `X.weight` with an `X.scale_weight` beside it."""
    for key in tensors:
        if key == MARKER or key.endswith("." + MARKER):
            return True
        if key.endswith(SCALE_WEIGHT):
            weight = tensors.get(key.removesuffix(SCALE_WEIGHT) + ".weight")
            if weight is not None and weight.dtype in FP8_DTYPES:
                return True
    return False


class ScaledFp8File:
    """A file whose scaled weights read as their fp32 values; the scale keys and the marker are hidden.

    Same interface as SafetensorsFile and CkptFile (keys, tensors, read, view, release, metadata, …)."""

    def __init__(self, base):
        self.base = base
        self.path = base.path
        self.size = base.size
        self.mtime_ns = base.mtime_ns
        self.metadata = base.metadata
        self._scale: dict[str, str] = {}  # weight key -> its scale_weight key
        hidden: set[str] = set()
        name = os.path.basename(base.path)
        for key, info in base.tensors.items():
            if key == MARKER or key.endswith("." + MARKER):
                hidden.add(key)
                continue
            for suffix in (SCALE_WEIGHT, SCALE_INPUT):
                weight = key.removesuffix(suffix) + ".weight"
                if key.endswith(suffix) and weight in base.tensors:
                    hidden.add(key)
                    if suffix == SCALE_WEIGHT:
                        _check_scale(name, key, info, base.tensors[weight])
                        self._scale[weight] = key
        self.tensors: dict[str, TensorInfo] = {}
        for key, info in base.tensors.items():  # in the base's order: the order the bytes lie in the file
            if key in hidden:
                continue
            if key in self._scale:  # read as fp32: its size in memory is what planning counts
                info = TensorInfo(key, torch.float32, info.shape, info.offset, math.prod(info.shape) * 4)
            self.tensors[key] = info

    @property
    def dropped(self) -> list[str]:
        return list(getattr(self.base, "dropped", []))

    def keys(self) -> list[str]:
        return list(self.tensors)

    def read(self, key: str) -> torch.Tensor:
        """A fresh tensor; a scaled weight as `weight.float() * scale_weight` (fp32)."""
        scale_key = self._scale.get(key)
        if scale_key is None:
            return self.base.read(key)
        scale = self.base.read(scale_key).float().reshape(())
        return self.base.read(key).float().mul_(scale)

    def view(self, key: str) -> torch.Tensor:
        """As SafetensorsFile.view; a scaled weight is computed fresh (it exists nowhere as bytes)."""
        if key not in self._scale:
            return self.base.view(key)
        try:  # not in place: a weight stored as fp32 would give the base's own tensor back from .float()
            scale = self.base.read(self._scale[key]).float().reshape(())
            return torch.mul(self.base.view(key).float(), scale)
        finally:
            self.base.release(key)

    def release(self, key: str) -> None:
        if key not in self._scale:
            self.base.release(key)

    def close(self) -> None:
        self.base.close()


def _check_scale(name: str, key: str, scale: TensorInfo, weight: TensorInfo) -> None:
    """A scale this reader understands: one floating value, beside a floating weight (from the header)."""
    if math.prod(scale.shape) != 1 or not scale.dtype.is_floating_point:
        raise CorruptModelError(
            f"{name}: {key} is {list(scale.shape)} {scale.dtype}, not one scale value; "
            "Alloy reads scaled fp8 files with one scale per weight only"
        )
    if not weight.dtype.is_floating_point:
        raise CorruptModelError(f"{name}: {key} scales a weight of {weight.dtype}, not a floating one")
