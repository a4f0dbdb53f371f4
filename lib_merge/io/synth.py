"""Synthetic checkpoints with real key names, for tests (scaled down) and benchmarks (full size).

Scaling divides every dimension larger than 77 by `scale` (the same size always maps to the
same smaller size), so square weights stay square and ranks and channel counts that tell
variants apart (4 latent channels, 3x3 kernels, 77 positions) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lib_merge.arch.layouts import SINGLE_FILE
from lib_merge.arch.registry import ARCHITECTURES, PREDICTION_MARKERS, SCHEDULE_BUFFERS, arch_keys
from lib_merge.io.layouts import LayoutSink
from lib_merge.io.writer import FileSink, PlannedTensor

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
}
INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"


@dataclass(frozen=True)
class SynthSpec:
    arch: str = "sd1"
    scale: int = 32  # 1 = full size
    dtype: torch.dtype = torch.float16  # for floating tensors
    seed: int = 0
    input_channels: int = 4  # 9 = inpainting, 8 = pix2pix
    ema: bool = False
    schedule: bool = False
    markers: bool = False
    nai_clip: bool = False  # store SD1 CLIP keys without "text_model." (NAI layout)
    components: tuple[str, ...] | None = None  # None = all
    std: float = 0.1
    variant: str = ""  # a named variant with key data of its own (SD3's "3.5-medium")
    layout: str = SINGLE_FILE  # arch.layouts: the names the file stores (Flux: "bfl", "diffusers")


def scaled(dim: int, scale: int) -> int:
    return dim if dim <= 77 or scale == 1 else max(2, dim // scale)


def synth_shapes(spec: SynthSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    arch = ARCHITECTURES[spec.arch]
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    data = arch.variant_data(spec.variant)
    if data is None:
        raise ValueError(f"no key data for {arch.label}")
    # A variant told by a missing module (Flux schnell: no guidance_in) leaves that module out.
    left_out = tuple(
        key.rsplit(".", 2)[0] + "." for key, present, name in arch.key_variants
        if name == spec.variant and not present
    )  # fmt: skip
    for key, (shape, dtype_name) in arch_keys(data).items():
        if left_out and key.startswith(left_out):
            continue
        if key.startswith("model_ema.") and not spec.ema:
            continue
        if key in SCHEDULE_BUFFERS and not spec.schedule:
            continue
        if key in PREDICTION_MARKERS and not spec.markers:
            continue
        component = arch.component_of(key)
        if spec.components is not None and component is not None and component not in spec.components:
            continue
        shape = tuple(scaled(d, spec.scale) for d in shape)
        if key == INPUT_CONV:
            shape = (shape[0], spec.input_channels) + shape[2:]
        dtype = _DTYPES[dtype_name]
        if dtype.is_floating_point and key not in SCHEDULE_BUFFERS:
            dtype = spec.dtype
        if spec.nai_clip and key.startswith("cond_stage_model.transformer.text_model."):
            key = key.replace("transformer.text_model.", "transformer.", 1)
        out[key] = (shape, dtype)
    return out


def _tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator, std: float) -> torch.Tensor:
    if key.endswith("position_ids"):
        return torch.arange(shape[-1], dtype=dtype).reshape(shape)
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    t = torch.empty(shape, dtype=torch.float32)
    t.normal_(0.0, std, generator=gen)
    return t.to(dtype)


def write_synthetic(path: str, spec: SynthSpec, metadata: dict[str, str] | None = None, overwrite: bool = True) -> str:
    """Stream a synthetic checkpoint to `path` one tensor at a time (full size fits in little RAM)."""
    shapes = synth_shapes(spec)
    gen = torch.Generator().manual_seed(spec.seed)
    plan = [PlannedTensor(k, dt, s) for k, (s, dt) in shapes.items()]
    sink = FileSink(path, metadata or {}, overwrite)
    if spec.layout != SINGLE_FILE:
        sink = LayoutSink(sink, spec.layout)
    try:
        sink.begin(plan)
        for key, (shape, dtype) in shapes.items():
            sink.put(key, _tensor(key, shape, dtype, gen, spec.std))
    except BaseException:
        sink.abort()
        raise
    return sink.finish(metadata or {})
