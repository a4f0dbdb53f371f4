"""Merge methods: one pure function per method, and the registry that describes them.

A method gets fp32 tensors (one per input, the same shape) and per-key float parameters
and returns a tensor of that shape. Elementwise methods may also be called on matching
slices of their inputs, which lets the engine work in bounded chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lib_merge.methods import classic


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: float
    low: float = -1.0
    high: float = 2.0
    vector: bool = True  # accepts a block vector


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str  # the UI / SuperMerger mode name
    inputs: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    fn: Callable[..., torch.Tensor]
    elementwise: bool = True
    # Per-key shortcut: given the params, the index of the input the result equals, or None.
    passthrough: Callable[[dict[str, float]], int | None] = lambda p: None
    # Optional: the same result computed on fp16/bf16 inputs with fp32 arithmetic inside one
    # op, written to `out` (a single rounding, so bit-identical to the fp32 path).
    fused: Callable[..., torch.Tensor] | None = None

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


def _ws_passthrough(p: dict[str, float]) -> int | None:
    return 0 if p["alpha"] == 0 else 1 if p["alpha"] == 1 else None


def _alpha_zero(p: dict[str, float]) -> int | None:
    return 0 if p["alpha"] == 0 else None


def _triple_passthrough(p: dict[str, float]) -> int | None:
    return 0 if p["alpha"] == 0 and p["beta"] == 0 else None


ALPHA = ParamSpec("alpha", 0.5)
BETA = ParamSpec("beta", 0.25)

METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec(
            "weighted_sum",
            "Weight sum",
            ("A", "B"),
            (ALPHA,),
            classic.weighted_sum,
            True,
            _ws_passthrough,
            fused=classic.weighted_sum_into,
        ),
        MethodSpec(
            "add_difference", "Add difference", ("A", "B", "C"), (ALPHA,), classic.add_difference, True, _alpha_zero
        ),
        MethodSpec(
            "triple_sum", "Triple sum", ("A", "B", "C"), (ALPHA, BETA), classic.triple_sum, True, _triple_passthrough
        ),
        MethodSpec(
            "sum_twice", "Sum twice", ("A", "B", "C"), (ALPHA, BETA), classic.sum_twice, True, _triple_passthrough
        ),
    )
}

MODE_ALIASES = {"ws": "weighted_sum", "add": "add_difference", "triple": "triple_sum", "twice": "sum_twice"}


def get_method(name: str) -> MethodSpec:
    from lib_merge.errors import RecipeTypeError

    try:
        return METHODS[MODE_ALIASES.get(name, name)]
    except KeyError:
        raise RecipeTypeError(f"unknown merge method {name!r}; known: {', '.join(METHODS)}") from None
