"""cast: a dtype hint for the output, not a computation (the merged file's dtype when none is asked for)."""

from __future__ import annotations

import typing
from typing import Literal

import torch

from lib_merge.methods.registry import merge_method

CastDtype = Literal["fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e5m2"]
CAST_DTYPES = typing.get_args(CastDtype)


def _always_the_input(params: dict) -> int:
    return 0


@merge_method("output dtype hint", "op", elementwise=True, passthrough=_always_the_input)
def cast(x: torch.Tensor, *, dtype: CastDtype = "fp16") -> torch.Tensor:
    return x
