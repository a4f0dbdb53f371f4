"""cosineA / cosineB (SPEC §4.3.1): a similarity-driven mix that needs a pre-pass over all keys.

The pre-pass collects per-key similarities of A and B; their robust range (P1…P99) turns each
key's similarity into a mixing factor k in the main pass: result = (1 − k)·B + k·A.
"""

from __future__ import annotations

import numpy as np
import torch

_COS_DIM0 = torch.nn.CosineSimilarity(dim=0, eps=1e-8)


def _flat_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.reshape(-1) @ b.reshape(-1)) / (a.norm() * b.norm())


def _normalized(a: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(a, p=2, dim=0, eps=1e-12)


def prepass_a(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    if a.dim() == 0:
        return np.empty(0, np.float32)
    return _COS_DIM0(_normalized(a), _normalized(b)).reshape(-1).cpu().numpy()


def prepass_b(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    if a.dim() == 0:
        return np.empty(0, np.float32)
    return ((_COS_DIM0(a, b) + _flat_cos(a, b)) / 2).reshape(-1).cpu().numpy()


def finish_prepass(parts: list[np.ndarray]) -> dict[str, float]:
    """s_min, s_max: the extremes of the similarities between their 1st and 99th percentile."""
    values = np.concatenate(parts) if parts else np.empty(0, np.float32)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"s_min": 0.0, "s_max": 1.0}
    p1, p99 = np.percentile(values, [1, 99], method="midpoint")
    kept = values[(values >= p1) & (values <= p99)]
    return {"s_min": float(kept.min()), "s_max": float(kept.max())}


def _mix(a: torch.Tensor, b: torch.Tensor, sim: torch.Tensor, shift: float, s_min: float, s_max: float):
    span = s_max - s_min if s_max != s_min else 1.0
    k = ((sim - s_min) / span - shift).clamp_(0, 1)
    return b.mul_(1 - k).add_(a.mul_(k))


def cosine_a(a: torch.Tensor, b: torch.Tensor, *, alpha: float, s_min: float, s_max: float) -> torch.Tensor:
    if a.dim() == 0:
        return a.lerp_(b, alpha)
    an, bn = _normalized(a), _normalized(b)
    sim = (_COS_DIM0(an, bn) + _flat_cos(an, bn)) / 2
    return _mix(a, b, sim, abs(alpha), s_min, s_max)


def cosine_b(a: torch.Tensor, b: torch.Tensor, *, alpha: float, s_min: float, s_max: float) -> torch.Tensor:
    if a.dim() == 0:
        return a.lerp_(b, alpha)
    sim = (_COS_DIM0(a, b) + _flat_cos(a, b)) / 2
    return _mix(a, b, sim, alpha, s_min, s_max)


def keeps_vae(key: str) -> bool:
    return key.startswith("first_stage_model.")
