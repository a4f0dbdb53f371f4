"""The four classic merge modes with the normal calc mode.

Each may overwrite its first argument: the engine passes fresh fp32 copies.
"""

from __future__ import annotations

import torch


def weighted_sum(a: torch.Tensor, b: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """(1 − α)·A + α·B"""
    return a.lerp_(b, alpha)


def weighted_sum_into(a: torch.Tensor, b: torch.Tensor, *, alpha: float, out: torch.Tensor) -> torch.Tensor:
    """Weighted sum of fp16/bf16 tensors: torch's lerp computes in fp32 and rounds once."""
    return torch.lerp(a, b, alpha, out=out)


def add_difference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """A + α·(B − C)"""
    return a.add_(b.sub_(c), alpha=alpha)


def triple_sum(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """(1 − α − β)·A + α·B + β·C"""
    return a.mul_(1 - alpha - beta).add_(b, alpha=alpha).add_(c, alpha=beta)


def sum_twice(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """(1 − β)·((1 − α)·A + α·B) + β·C"""
    return a.lerp_(b, alpha).lerp_(c, beta)
