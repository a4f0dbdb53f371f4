"""fp8 as a storage format: the checked cast of a result into fp8, and the peak of an fp8 tensor.

Nothing is computed in fp8 (torch has few fp8 ops, and the precision is too coarse to accumulate
in): values are upcast to fp32 before any arithmetic, and cast back only as they are written.
That cast is where a value beyond the format's range (±448 for e4m3fn, ±57344 for e5m2), an
infinity or a NaN is found: torch would turn it into ±max or NaN without a word, so without
clamping it is refused naming the key, and with clamping it is clamped to ±max first.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from lib_merge.errors import Fp8RangeError
from lib_merge.io.dtypes import FP8_DTYPES, output_dtype_name

_SIGN_OFF = 0x7F  # fp8 is sign-magnitude: the low 7 bits order the magnitudes (NaN codes highest)


@functools.cache
def _fp16_values(dtype: torch.dtype) -> np.ndarray:
    """The fp16 value of each of the 256 codes of an fp8 dtype (a read-only table)."""
    table = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).to(torch.float16).numpy()
    table.flags.writeable = False
    return table


def widen(tensor: torch.Tensor) -> torch.Tensor:
    """An fp8 tensor as fp16, exactly: every e4m3fn and e5m2 value (NaN too) is an fp16 value. A table
    lookup per byte, about 3x faster than torch's fp8 cast on the CPU, which merges of fp8 files spend
    most of their time in (bench/run.py --arch flux)."""
    if tensor.device.type != "cpu":
        return tensor.to(torch.float16)
    codes = tensor.contiguous().view(torch.uint8).numpy()
    return torch.from_numpy(_fp16_values(tensor.dtype)[codes])


def fp8_max(dtype: torch.dtype) -> float:
    """The largest finite value of an fp8 dtype (448 or 57344)."""
    return float(torch.finfo(dtype).max)


def fp8_peak(tensor: torch.Tensor) -> float:
    """max |x| of an fp8 tensor without widening it (aminmax has no fp8 kernel): NaN if any element is
    NaN, inf if any is infinite. The magnitude bits of sign-magnitude fp8 sort as the values do."""
    if tensor.numel() == 0:
        return 0.0
    top = int((tensor.reshape(-1).view(torch.uint8) & _SIGN_OFF).max())
    return float(torch.tensor([top], dtype=torch.uint8).view(tensor.dtype).float())


def to_fp8(tensor: torch.Tensor, dtype: torch.dtype, key: str, clamp: bool = False) -> torch.Tensor:
    """`tensor` (a wider float) cast to the fp8 `dtype` as it is written.

    Without `clamp`, a value beyond ±max, an infinity or a NaN is an Fp8RangeError naming the key; with
    it, values are clamped to ±max first (a NaN stays NaN: only a merge run with nonfinite=ignore has one)."""
    if dtype not in FP8_DTYPES:
        raise ValueError(f"{dtype} is no fp8 dtype")
    if tensor.dtype in FP8_DTYPES:
        return tensor if tensor.dtype == dtype else to_fp8(tensor.float(), dtype, key, clamp)
    top = fp8_max(dtype)
    if tensor.numel():
        low, high = torch.aminmax(tensor)  # one read-only pass; NaN anywhere makes them NaN
        low, high = float(low), float(high)
        if not (-top <= low and high <= top):
            if not clamp:
                raise Fp8RangeError(_refusal(key, dtype, tensor, low, high))
            tensor = tensor.clamp(-top, top)
    return tensor.to(dtype)


def _refusal(key: str, dtype: torch.dtype, tensor: torch.Tensor, low: float, high: float) -> str:
    name = output_dtype_name(dtype)
    if math.isnan(low) or math.isnan(high) or math.isinf(low) or math.isinf(high):
        bad = int((~torch.isfinite(tensor)).sum())
        return f"key {key} has {bad} NaN/Inf values; an {name} output takes finite values within ±{fp8_max(dtype):g}"
    peak = max(-low, high)
    return f"key {key} has values up to {peak:.6g}, beyond {name}'s range ±{fp8_max(dtype):g}"
