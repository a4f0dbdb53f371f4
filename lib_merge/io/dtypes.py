"""The safetensors dtype table, shared by the reader and the writer."""

from __future__ import annotations

import functools

import torch

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in SAFETENSORS_DTYPES.items()}

# Names people type (CLI, recipes, UI) for output dtypes.
OUTPUT_DTYPES: dict[str, torch.dtype] = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
# Storage-only formats: nothing is computed in them (torch has few fp8 ops); values are upcast to fp32
# before any arithmetic and range-checked when a result is cast back (io/fp8.py).
FP8_DTYPES: tuple[torch.dtype, ...] = (torch.float8_e4m3fn, torch.float8_e5m2)
# Dtypes a merge may compute in: not the fp8 ones.
COMPUTE_DTYPES = ("fp32", "bf16", "fp16")


@functools.cache
def itemsize(dtype: torch.dtype) -> int:
    """Bytes per element; cached, as planning a header asks once per tensor."""
    return torch.empty((), dtype=dtype).element_size()


def is_floating(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def output_dtype_name(dtype: torch.dtype) -> str:
    """ "fp16", "bf16", "fp32", "fp8_e4m3fn" or "fp8_e5m2": the name a user types for an output dtype."""
    return next(name for name, value in OUTPUT_DTYPES.items() if value == dtype)


def parse_output_dtype(name: str) -> torch.dtype:
    from lib_merge.errors import ParameterError

    try:
        return OUTPUT_DTYPES[name]
    except KeyError:
        raise ParameterError(f"unknown dtype {name!r}; valid: {', '.join(OUTPUT_DTYPES)}") from None


def parse_compute_dtype(name: str) -> torch.dtype:
    """A compute dtype setting: fp8 is a storage format only, so it is refused here by name."""
    from lib_merge.errors import ParameterError

    if name not in COMPUTE_DTYPES:
        raise ParameterError(f"compute dtype {name!r} is not one Alloy computes in; valid: {', '.join(COMPUTE_DTYPES)}")
    return OUTPUT_DTYPES[name]
