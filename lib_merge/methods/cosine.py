"""cosineA / cosineB: a similarity-driven mix that needs a pre-pass over all keys.

The pre-pass collects per-key similarities of A and B; their robust range (P1…P99, taken in
SuperMerger's order) turns each key's similarity into a mixing factor k in the main pass:
result = (1 − k)·B + k·A. A key whose norm is zero in A or B has no cosine (0/0): it keeps A
and takes no part in the range (SuperMerger writes NaN there).
"""

from __future__ import annotations

import numpy as np
import torch

from lib_merge.methods.registry import Weight, merge_method


def keeps_vae(key: str) -> bool:
    return key.startswith("first_stage_model.")


def _similarity(
    a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8, scratch: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine along dim 0, cosine of the flat tensors), from one product and one square of each input.

    Same definitions as torch's CosineSimilarity(dim=0) and a flat dot product over the norms,
    without their strided reductions (columns of the [rows, rest] view are summed at once). The
    products go through one `scratch` tensor of the [rows, rest] shape: fresh memory for each is
    what a model-sized pre-pass spends its time on.
    """
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    scratch = torch.empty_like(a2) if scratch is None else scratch
    dot = torch.mul(a2, b2, out=scratch).sum(0)
    sq_a = torch.mul(a2, a2, out=scratch).sum(0)
    sq_b = torch.mul(b2, b2, out=scratch).sum(0)
    per_column = dot / (sq_a * sq_b).sqrt_().clamp_min_(eps)
    flat = dot.sum() / (sq_a.sum() * sq_b.sum()).sqrt_()
    return per_column.reshape(a.shape[1:]), flat


def _normalized(a: torch.Tensor, scratch: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """torch.nn.functional.normalize(a, p=2, dim=0) on the [rows, rest] view (its square in `scratch`)."""
    a2 = a.reshape(a.shape[0], -1)
    return (a2 / torch.mul(a2, a2, out=scratch).sum(0).sqrt_().clamp_min_(eps)).reshape(a.shape)


def _sim_a(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """cosineA's (per-column similarity, the main pass's mix similarity), on unit columns.

    None when A or B has norm zero: the flat cosine is 0/0 (a unit column of zeros stays zero)."""
    scratch = torch.empty(a.shape[0], a[0].numel(), dtype=a.dtype, device=a.device)
    per_column, flat = _similarity(_normalized(a, scratch), _normalized(b, scratch), scratch=scratch)
    if flat.isnan():
        return None
    return per_column, (per_column + flat) / 2


def _sim_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    per_column, flat = _similarity(a, b)
    if flat.isnan():
        return None
    return (per_column + flat) / 2


def prepass_a(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, torch.Tensor | None]:
    """The per-column similarities for the range, and this key's mix similarity for the main pass."""
    sims = _sim_a(a, b) if a.dim() > 0 else None
    if sims is None:
        return np.empty(0, np.float32), None
    per_column, sim = sims
    return per_column.reshape(-1).cpu().numpy(), sim


def prepass_b(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, torch.Tensor | None]:
    sim = _sim_b(a, b) if a.dim() > 0 else None
    if sim is None:
        return np.empty(0, np.float32), None
    return sim.reshape(-1).cpu().numpy(), sim


def finish_prepass(parts: list[np.ndarray]) -> dict[str, float]:
    """s_min, s_max: the extremes of what is left after two cuts, in SuperMerger's order.

    First the values below the 1st percentile go, then those above the 99th percentile of the
    rest; percentiles in float64 with numpy's "midpoint" method, as SuperMerger takes them."""
    values = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"s_min": 0.0, "s_max": 1.0}
    values = values[values >= np.percentile(values, 1, method="midpoint")]
    values = values[values <= np.percentile(values, 99, method="midpoint")]
    return {"s_min": float(values.min()), "s_max": float(values.max())}


def _mix(a: torch.Tensor, b: torch.Tensor, sim: torch.Tensor, shift: float, s_min: float, s_max: float):
    span = s_max - s_min if s_max != s_min else 1.0
    k = ((sim - s_min) / span - shift).clamp_(0, 1)
    return b.mul_(1 - k).add_(a.mul_(k))


@merge_method("cosineA", "calc", keeps_key=keeps_vae, prepass=prepass_a, finish=finish_prepass)
def cosine_a(
    a: torch.Tensor, b: torch.Tensor, *, alpha: Weight = 0.5, s_min: float, s_max: float, prepared=None
) -> torch.Tensor:
    if a.dim() == 0:
        return a.lerp_(b, alpha)
    if prepared is None:
        sims = _sim_a(a, b)
        if sims is None:  # a zero norm: no cosine, A stays
            return a
        prepared = sims[1]
    return _mix(a, b, prepared.to(a.device), abs(alpha), s_min, s_max)


@merge_method("cosineB", "calc", keeps_key=keeps_vae, prepass=prepass_b, finish=finish_prepass)
def cosine_b(
    a: torch.Tensor, b: torch.Tensor, *, alpha: Weight = 0.5, s_min: float, s_max: float, prepared=None
) -> torch.Tensor:
    if a.dim() == 0:
        return a.lerp_(b, alpha)
    sim = prepared.to(a.device) if prepared is not None else _sim_b(a, b)
    if sim is None:  # a zero norm: no cosine, A stays
        return a
    return _mix(a, b, sim, alpha, s_min, s_max)
