"""The study's samplers by name, all Optuna's and all seeded: the same seed gives the same trials."""

from __future__ import annotations

from lib_merge.app.optimize.space import SearchSpace
from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import ParameterError

SAMPLERS = ("tpe", "cmaes", "random", "grid")


def make_sampler(name: str, seed: int, space: SearchSpace, schema: BlockSchema | None, objectives: int = 1):
    """TPE (the default), CMA-ES (continuous inputs; choices are drawn at random beside it), random, or
    grid (each range's steps, else five points)."""
    import optuna

    if name == "tpe":
        # The constant liar keeps instances sharing a study from proposing next to each other's running trials.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "cmaes":
        if objectives > 1:
            raise ParameterError("the cmaes sampler searches one objective; use tpe or random for several")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(schema), seed=seed)
    raise ParameterError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")
