"""Scales for the analysis pictures: where a similarity sits on the heatmap's colour ramp, and the ticks of
the bar chart's axis.

Related models are 99.x % alike in most blocks, so a linear 0…100 % scale paints them all one colour. The
heatmap colours the distance from identical, 100 − similarity, on a log scale spanning the data's range,
rounded out to 1-2-5 steps: 99.9 → 99 → 90 % are equal colour steps, like 0.1 → 1 → 10 points of
difference. The ends are printed on the colour bar, so two pictures are compared by their tick labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

FLOOR = 1e-3  # % of distance treated as identical: log(0) has no place on the ramp
MANTISSAS = (1.0, 2.0, 5.0)


def distance(similarity: float) -> float:
    """100 − similarity (in %), held at FLOOR so that identical values stay on the log scale."""
    return max(100.0 - similarity, FLOOR)


def nice_below(x: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above x (x > 0)."""
    k = math.floor(math.log10(x))
    return max(m * 10.0**k for m in MANTISSAS if m * 10.0**k <= x * (1 + 1e-9))


def nice_above(x: float) -> float:
    """The smallest 1, 2 or 5 × 10^k not below x (x > 0)."""
    k = math.floor(math.log10(x))
    return min(m * 10.0**j for j in (k, k + 1) for m in MANTISSAS if m * 10.0**j >= x * (1 - 1e-9))


def nice_steps(low: float, high: float, mantissas: tuple[float, ...] = MANTISSAS) -> list[float]:
    """The 1-2-5 numbers (or those of `mantissas`) from low to high, inclusive."""
    out = []
    for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for m in mantissas:
            x = m * 10.0**k
            if low * (1 - 1e-9) <= x <= high * (1 + 1e-9):
                out.append(x)
    return out


@dataclass(frozen=True)
class SimilarityScale:
    """Distances from `low` (the most similar end, position 1) to `high` (position 0), log-spaced."""

    low: float
    high: float

    @classmethod
    def of(cls, similarities: Iterable[float]) -> SimilarityScale:
        """The 1-2-5 range around the data; one step wide at least (identical models have one value)."""
        distances = [distance(v) for v in similarities if math.isfinite(v)] or [FLOOR]
        low, high = nice_below(min(distances)), nice_above(max(distances))
        if high <= low:
            high = nice_above(low * 1.01)
        return cls(low, high)

    def position(self, similarity: float) -> float:
        """0 (least similar end) … 1 (most similar end) on the ramp."""
        span = math.log10(self.high) - math.log10(self.low)
        return min(max((math.log10(self.high) - math.log10(distance(similarity))) / span, 0.0), 1.0)

    def ticks(self, at_most: int) -> list[float]:
        """Similarities (in %) to label on the colour bar: both ends and as many 1-2-5 steps between as fit."""
        for mantissas in (MANTISSAS, (1.0, 5.0), (1.0,)):
            inner = nice_steps(self.low, self.high, mantissas)
            if len(inner) <= at_most:
                break
        else:
            every = math.ceil(len(inner) / max(at_most, 2))
            inner = inner[::every]
        gap = 0.5 / max(at_most, 2)
        inside = [d for d in inner if gap < self.position(100 - d) < 1 - gap]
        return [100 - d for d in [self.low, *inside, self.high]]

    def decimals(self) -> int:
        """Digits after the point that tell the most similar values apart (2 to 3)."""
        return min(max(1 - math.floor(math.log10(self.low)), 2), 3)


def tick_label(similarity: float) -> str:
    """A colour-bar tick: 99.95, 99.9, 99, 90, 0, -100 (the distance's own digits, no trailing zeros)."""
    d = 100 - similarity
    digits = max(0, -math.floor(math.log10(d) + 1e-6)) if d > 0 else 0  # 100 - 99.9 is 0.0999…
    return f"{similarity:.{digits}f}"


def axis_ticks(top: float, count: int = 5) -> list[float]:
    """Ticks 0, s, 2s, … up to the first multiple of a 1-2-5 step s at or above `top` (about `count` steps)."""
    step = nice_above(max(top, FLOOR) / count)
    n = max(1, math.ceil(top / step - 1e-9))
    return [i * step for i in range(n + 1)]


def axis_label(value: float, step: float) -> str:
    """A tick value with as many decimals as its step needs."""
    digits = max(0, -math.floor(math.log10(step) + 1e-6)) if step < 1 else 0
    return f"{value:.{digits}f}"
