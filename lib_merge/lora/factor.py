"""A weight change ΔW as a low-rank LoRA pair: up · down ≈ ΔW (docs/FORMULAS.md §10.3).

ΔW is flattened to [out, in·kh·kw]; U, S, Vᵀ come from a randomized SVD (torch.svd_lowrank's algorithm,
its random test matrix drawn on the CPU from the seed, q = rank + oversample, 2 power iterations) or a
full SVD, on the device ΔW is on. The rank is fixed, or the
smallest whose energy Σ S_i² / ‖ΔW‖² reaches a threshold, or the count of S_i ≥ ratio · S_1.
The split is balanced (up = U·√S, down = √S·Vᵀ), optionally clamped to a quantile of |up, down|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lib_merge.errors import NonFiniteError, ParameterError


@dataclass(frozen=True)
class RankRule:
    """How many singular values to keep: `rank` fixed, else by `energy`, else by `ratio` (both capped
    at `max_rank`)."""

    rank: int | None = None
    energy: float | None = None
    ratio: float | None = None
    max_rank: int = 128

    def __post_init__(self) -> None:
        if self.rank is not None and self.rank < 1:
            raise ParameterError(f"rank {self.rank}: give 1 or more")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ParameterError(f"energy {self.energy}: give a share in (0, 1], e.g. 0.99")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ParameterError(f"ratio {self.ratio}: give a share of the largest singular value in (0, 1]")
        if self.max_rank < 1:
            raise ParameterError(f"max rank {self.max_rank}: give 1 or more")
        if self.rank is None and self.energy is None and self.ratio is None:
            raise ParameterError("give a rank, an energy threshold or a ratio")

    @property
    def most(self) -> int:
        """The most singular values this rule can keep (how many to compute)."""
        return self.rank if self.rank is not None else self.max_rank

    def choose(self, s: torch.Tensor, total_energy: float) -> int:
        """The rank for singular values `s` (descending) of a matrix with ‖ΔW‖² = `total_energy`."""
        if self.rank is not None:
            return min(self.rank, len(s))
        if self.energy is not None:
            kept = torch.cumsum(s.double() ** 2, 0) / max(total_energy, 1e-300)
            k = int(torch.searchsorted(kept, torch.tensor(self.energy, dtype=torch.float64) - 1e-12)) + 1
        else:
            k = int((s >= self.ratio * s[0]).sum())
        return max(1, min(k, self.max_rank, len(s)))

    def describe(self) -> str:
        if self.rank is not None:
            return f"rank {self.rank}"
        if self.energy is not None:
            return f"energy {self.energy:g} (at most rank {self.max_rank})"
        return f"ratio {self.ratio:g} (at most rank {self.max_rank})"


@dataclass(frozen=True)
class Factoring:
    """How to factorise: randomized SVD (seeded) or full SVD, and the optional clamp quantile."""

    full_svd: bool = False
    seed: int = 0
    oversample: int = 8
    power_iterations: int = 2
    clamp: float = 1.0  # quantile of |up, down| to clamp to; 1 = off

    def __post_init__(self) -> None:
        if not 0 < self.clamp <= 1:
            raise ParameterError(f"clamp quantile {self.clamp}: give a value in (0, 1], 1 = off")


@dataclass
class LowRank:
    up: torch.Tensor  # [out, r] or [out, r, 1, 1]
    down: torch.Tensor  # [r, in] or [r, in, kh, kw]
    singular: torch.Tensor  # the singular values kept

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


def svd_top(matrix: torch.Tensor, k: int, how: Factoring) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top `k` (or fewer) singular triplets of a 2-D float32 matrix."""
    smaller = min(matrix.shape)
    q = min(k + how.oversample, smaller)
    if how.full_svd or q >= smaller:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return u[:, :k], s[:k], vh[:k]
    u, s, v = randomized_svd(matrix, q, how.power_iterations, how.seed)
    return u[:, :k], s[:k], v[:, :k].T


def randomized_svd(matrix: torch.Tensor, q: int, iterations: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(U, S, V) of rank q by Halko, Martinsson and Tropp's randomized range finder with power
    iterations (their algorithms 4.4 and 5.1), the steps torch.svd_lowrank takes, so on the CPU the
    bits are its own under torch.manual_seed(seed). The random test matrix is drawn on the CPU from
    its own generator: the same draw on every device, and no global random state touched."""
    tall = matrix if matrix.shape[0] >= matrix.shape[1] else matrix.T
    draw = torch.randn(tall.shape[1], q, generator=torch.Generator().manual_seed(seed), dtype=matrix.dtype)
    basis = torch.linalg.qr(tall @ draw.to(matrix.device)).Q
    for _ in range(iterations):
        basis = torch.linalg.qr(tall.T @ basis).Q
        basis = torch.linalg.qr(tall @ basis).Q
    u, s, vh = torch.linalg.svd(basis.T @ tall, full_matrices=False)
    u, v = basis @ u, vh.T
    return (u, s, v) if tall is matrix else (v, s, u)


def factorise(delta: torch.Tensor, rule: RankRule, how: Factoring, what: str = "a module") -> LowRank | None:
    """ΔW as a balanced LoRA pair, or None when ΔW is zero (nothing to write)."""
    shape = tuple(delta.shape)
    matrix = delta.reshape(shape[0], -1).float()
    if not matrix.isfinite().all():
        raise NonFiniteError(f"{what}: the weight change has NaN or infinite values")
    total = float(matrix.double().square().sum())
    if total == 0.0:
        return None
    u, s, vh = svd_top(matrix, min(rule.most, min(matrix.shape)), how)
    k = rule.choose(s.cpu(), total)
    root = s[:k].sqrt()
    up = u[:, :k] * root
    down = root[:, None] * vh[:k]
    if how.clamp < 1:
        up, down = clamp_pair(up, down, how.clamp)
    if len(shape) == 4:
        return LowRank(up[:, :, None, None], down.reshape(k, *shape[1:]), s[:k])
    return LowRank(up, down, s[:k])


def clamp_pair(up: torch.Tensor, down: torch.Tensor, quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """up and down clamped to ±q, q the `quantile` of all their absolute values."""
    values = torch.cat([up.flatten(), down.flatten()]).abs()
    position = max(1, math.ceil(quantile * values.numel()))
    q = float(values.kthvalue(position).values)
    return up.clamp(-q, q), down.clamp(-q, q)


def relative_error(delta: torch.Tensor, pair: LowRank | None) -> float:
    """‖ΔW − up·down‖ / ‖ΔW‖ (0 for a zero ΔW)."""
    matrix = delta.reshape(delta.shape[0], -1).float()
    norm = float(matrix.norm())
    if norm == 0.0:
        return 0.0
    if pair is None:
        return 1.0
    approx = pair.up.reshape(pair.up.shape[0], -1) @ pair.down.reshape(pair.rank, -1)
    return float((matrix - approx).norm()) / norm
