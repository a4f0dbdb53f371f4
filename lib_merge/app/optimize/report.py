"""The study's honest result: the best trial, model A and model B scored on held-out seeds the search never
saw, with a 95 % interval per objective, and whether the best beats both (a paired interval of the
differences, image by image, that leaves out zero)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Estimate:
    mean: float
    low: float  # the 95 % interval (Student's t over the images)
    high: float
    images: int

    def as_json(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "images": self.images}


def estimate(scores: list[float]) -> Estimate:
    """Mean and 95 % interval; one image gives an interval of zero width (nothing to spread)."""
    from scipy import stats

    values = np.asarray(scores, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2 or float(values.std(ddof=1)) == 0.0:
        return Estimate(mean, mean, mean, len(values))
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return Estimate(mean, mean - half, mean + half, len(values))


def beats(best: list[float], other: list[float], direction: str) -> tuple[bool, Estimate]:
    """Whether the best is better than the other on the same seeds and prompts: the 95 % interval of the
    paired differences lies wholly on the better side of zero (two images at least)."""
    difference = estimate([b - o for b, o in zip(best, other, strict=True)])
    if difference.images < 2:  # one image has no spread: no verdict
        return False, difference
    better = difference.low > 0 if direction == "maximize" else difference.high < 0
    return better, difference


def holdout_report(scores: dict[str, dict[str, list[float]]], directions: dict[str, str]) -> dict:
    """`scores[model][objective]`: the per-image scores of "best", "A" and "B" on the held-out seeds."""
    report: dict = {"objectives": {}}
    for objective, direction in directions.items():
        entry: dict = {"direction": direction}
        for model, per_objective in scores.items():
            entry[model] = estimate(per_objective[objective]).as_json()
        best = scores["best"][objective]
        for model in ("A", "B"):
            if model in scores:
                better, difference = beats(best, scores[model][objective], direction)
                entry[f"best_minus_{model}"] = difference.as_json()
                entry[f"beats_{model}"] = better
        entry["beats_both"] = all(entry.get(f"beats_{m}", False) for m in ("A", "B") if m in scores)
        report["objectives"][objective] = entry
    return report
