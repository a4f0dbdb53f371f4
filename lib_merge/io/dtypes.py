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
}


@functools.cache
def itemsize(dtype: torch.dtype) -> int:
    """Bytes per element; cached, as planning a header asks once per tensor."""
    return torch.empty((), dtype=dtype).element_size()


def is_floating(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point


def output_dtype_name(dtype: torch.dtype) -> str:
    """ "fp16", "bf16" or "fp32": the name a user types for an output dtype."""
    return next(name for name, value in OUTPUT_DTYPES.items() if value == dtype)


def parse_output_dtype(name: str) -> torch.dtype:
    from lib_merge.errors import ParameterError

    try:
        return OUTPUT_DTYPES[name]
    except KeyError:
        raise ParameterError(f"unknown dtype {name!r}; valid: {', '.join(OUTPUT_DTYPES)}") from None
