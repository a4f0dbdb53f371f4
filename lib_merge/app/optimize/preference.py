"""From a person's choices to one utility per trial, the next trial's opponent, and the next trial's inputs.

The fit is choix's Bradley-Terry (ILSR), not ours; the sampler is the study's own Optuna sampler, run on a
copy of the trials that carries the fitted utilities as their values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lib_merge.app.optimize.pairs import Pair
from lib_merge.app.optimize.samplers import make_sampler

# Keeps an unbeaten trial's utility finite (also the prior's precision). Small, so that a new trial that beats
# the best is the best at once: a person's choices are few, and a strong prior keeps the old best on top
# (measured in docs/OPTIMIZE.md: 0.05 left the reported best two to three times further from the target).
REGULARISATION = 0.001


@dataclass(frozen=True)
class Utility:
    value: float  # Bradley-Terry log-strength (the mean over the trials is 0)
    error: float  # its standard error, from the fit's Fisher information


def comparisons(pairs: list[Pair], index: dict[int, int]) -> list[tuple[int, int]]:
    """(winner, loser) index pairs; a tie counts as one win each way; a skip as nothing."""
    found = []
    for pair in pairs:
        if pair.left not in index or pair.right not in index:
            continue
        left, right = index[pair.left], index[pair.right]
        if pair.winner == "left":
            found.append((left, right))
        elif pair.winner == "right":
            found.append((right, left))
        elif pair.winner == "tie":
            found += [(left, right), (right, left)]
    return found


def fit_utilities(numbers: list[int], pairs: list[Pair]) -> dict[int, Utility]:
    import choix

    index = {number: i for i, number in enumerate(numbers)}
    data = comparisons(pairs, index)
    prior = 1 / math.sqrt(REGULARISATION)
    if not data:
        return {number: Utility(0.0, prior) for number in numbers}
    try:
        strengths = choix.ilsr_pairwise(len(numbers), data, alpha=REGULARISATION)
    except RuntimeError:  # no convergence on a hard case: a stronger prior converges
        strengths = choix.ilsr_pairwise(len(numbers), data, alpha=100 * REGULARISATION)
    strengths = np.asarray(strengths, dtype=np.float64)
    information = np.full(len(numbers), REGULARISATION)
    for winner, loser in data:
        p = 1 / (1 + math.exp(strengths[loser] - strengths[winner]))
        information[winner] += p * (1 - p)
        information[loser] += p * (1 - p)
    return {n: Utility(float(strengths[i]), float(1 / math.sqrt(information[i]))) for n, i in index.items()}


def opponent(new: int, utilities: dict[int, Utility]) -> int:
    """Whom the new trial meets: the current best. Each choice then says whether the search has found a
    better trial, which is what a search needs to know (pairing with the most uncertain trial instead found
    worse merges in the same number of trials: docs/OPTIMIZE.md)."""
    others = {n: u for n, u in utilities.items() if n != new}
    return best(others)


def best(utilities: dict[int, Utility]) -> int | None:
    return max(utilities, key=lambda n: (utilities[n].value, -n)) if utilities else None


def propose(plan, trials: list, utilities: dict[int, Utility], seed: int) -> dict:
    """The next trial's inputs: the study's sampler on the finished trials valued by their utilities."""
    import optuna

    sampler = make_sampler(plan.request.sampler, seed, plan.space, plan.schema)
    scratch = optuna.create_study(direction="maximize", sampler=sampler)
    for t in trials:
        if t.number in utilities:
            scratch.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=utilities[t.number].value))  # fmt: skip
    trial = scratch.ask()
    plan.space.suggest(trial, plan.schema)
    return trial.params
