"""The four classic merge modes with the normal calc mode.

Each may overwrite its first argument: the engine passes fresh fp32 copies.
"""

from __future__ import annotations

import torch

from lib_merge.methods.registry import Weight, alpha_at_an_end, alpha_is_zero, merge_method
from lib_merge.methods.widening import weighted_sum_widening


def weighted_sum_into(a: torch.Tensor, b: torch.Tensor, *, alpha: float, out: torch.Tensor) -> torch.Tensor:
    """Weighted sum of fp16/bf16 tensors: torch's lerp computes in fp32 and rounds once. Into a
    wider (fp32) `out`, the inputs are widened first, as the fp32 path does."""
    if out.dtype != a.dtype or out.dtype != b.dtype:
        return weighted_sum_widening(a, b, alpha, out)
    return torch.lerp(a, b, alpha, out=out)


def _lerps(params: dict) -> bool:
    """Each weight of a chain of lerps in [0, 1]: every step lies between its inputs."""
    return all(isinstance(params[n], (int, float)) and 0 <= params[n] <= 1 for n in ("alpha", "beta") if n in params)


def _convex(params: dict) -> bool:
    """Weights in [0, 1] that also sum to at most 1: a convex combination of the inputs."""
    return _lerps(params) and params["alpha"] + params["beta"] <= 1


@merge_method(
    "Weight sum", "mode", elementwise=True, passthrough=alpha_at_an_end, fused=weighted_sum_into, bounded=_lerps
)
def weighted_sum(a: torch.Tensor, b: torch.Tensor, *, alpha: Weight = 0.5) -> torch.Tensor:
    """(1 − α)·A + α·B"""
    return a.lerp_(b, alpha)


@merge_method("Add difference", "mode", elementwise=True, passthrough=alpha_is_zero)
def add_difference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: Weight = 0.5) -> torch.Tensor:
    """A + α·(B − C)"""
    return a.add_(b.sub_(c), alpha=alpha)


def _both_zero(params: dict) -> int | None:
    return 0 if params["alpha"] == 0 and params["beta"] == 0 else None


@merge_method("Triple sum", "mode", elementwise=True, passthrough=_both_zero, bounded=_convex)
def triple_sum(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: Weight = 0.5, beta: Weight = 0.25
) -> torch.Tensor:
    """(1 − α − β)·A + α·B + β·C"""
    return a.mul_(1 - alpha - beta).add_(b, alpha=alpha).add_(c, alpha=beta)


@merge_method("Sum twice", "mode", elementwise=True, passthrough=_both_zero, bounded=_lerps)
def sum_twice(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: Weight = 0.5, beta: Weight = 0.25
) -> torch.Tensor:
    """(1 − β)·((1 − α)·A + α·B) + β·C"""
    return a.lerp_(b, alpha).lerp_(c, beta)
