"""Merge methods: one pure function per method, and the registry that describes them.

A method gets fp32 tensors (one per input, the same shape) and per-key float parameters
and returns a tensor of that shape. Elementwise methods may also be called on matching
slices of their inputs, which lets the engine work in bounded chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lib_merge.methods import adjust, calc, classic, cosine, modern


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: float | str
    low: float = -1.0
    high: float = 2.0
    vector: bool = True  # accepts a block vector
    integer: bool = False  # printed and parsed as a whole number (seed, axis)
    enforce: bool = False  # values outside [low, high] are refused before the merge
    choices: tuple[str, ...] = ()  # a word parameter (TIES's sign) instead of a number
    boolean: bool = False  # True/False in recipes, 1.0/0.0 inside
    text: bool = False  # a value object written as one positional string after the models (Adjust)
    per_model: bool = False  # also takes a list of numbers, one per model (after the base, if any)


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
    needs_key: bool = False  # fn also gets key= (per-key seeds)
    keeps_key: Callable[[str], bool] | None = None  # keys this method leaves as its first input
    # A first pass over every key (A and B only): prepass(a, b) per key, then finish(parts) gives
    # extra parameters for the main pass (the cosine modes' similarity range).
    prepass: Callable[[torch.Tensor, torch.Tensor], object] | None = None
    finish: Callable[[list], dict[str, float]] | None = None
    variadic: bool = False  # inputs: the named ones, then any number of further models
    max_models: int = 17  # A plus 16

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


def _ws_passthrough(p: dict[str, float]) -> int | None:
    return 0 if p["alpha"] == 0 else 1 if p["alpha"] == 1 else None


def _alpha_zero(p: dict[str, float]) -> int | None:
    alpha = p["alpha"]
    return 0 if (not any(alpha) if isinstance(alpha, tuple) else alpha == 0) else None


def _triple_passthrough(p: dict[str, float]) -> int | None:
    return 0 if p["alpha"] == 0 and p["beta"] == 0 else None


CAST_DTYPES = ("fp16", "bf16", "fp32")  # cast(x, dtype=…): the file's dtype when none is asked for
ALPHA = ParamSpec("alpha", 0.5)
BETA = ParamSpec("beta", 0.25)
UNIT_ALPHA = ParamSpec("alpha", 0.5, 0.0, 1.0, enforce=True)
UNIT_BETA = ParamSpec("beta", 0.25, 0.0, 1.0, enforce=True)
SEED = ParamSpec("seed", 0.0, 0.0, float(2**63 - 1), vector=False, integer=True, enforce=True)
STRENGTH = ParamSpec("alpha", 1.0)
DENSITY = ParamSpec("density", 0.5, 0.0, 1.0, enforce=True)
DROP = ParamSpec("p", 0.5, 0.0, 0.999999, enforce=True)
SIGN = ParamSpec("sign", "sum", vector=False, choices=("sum", "count"))

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
        MethodSpec(
            "train_difference", "trainDifference", ("A", "B", "C"), (ALPHA,), calc.train_difference, False,
            _alpha_zero,
        ),
        MethodSpec("smooth_add", "smoothAdd", ("A", "B", "C"), (ALPHA,), calc.smooth_add, False, _alpha_zero),
        MethodSpec(
            "extract", "extract", ("A", "B", "C"),
            (UNIT_ALPHA, ParamSpec("beta", 0.0, 0.0, 1.0, vector=False, enforce=True),
             ParamSpec("gamma", 0.3, 0.0, 1e6, vector=False, enforce=True)),
            calc.extract, False,
        ),
        MethodSpec(
            "tensor_swap", "tensor", ("A", "B"),
            (UNIT_ALPHA, UNIT_BETA, ParamSpec("axis", 0.0, 0.0, 1.0, vector=False, integer=True, enforce=True)),
            calc.tensor_swap, False,
        ),
        MethodSpec(
            "self_scale", "self", ("A",), (ALPHA,), calc.self_scale, True, _alpha_zero,
            keeps_key=calc.keeps_a_for_self,
        ),
        MethodSpec(
            "plus_random", "plus random", ("A",), (ALPHA, SEED), calc.plus_random, False, _alpha_zero,
            needs_key=True, keeps_key=calc.keeps_a_for_self,
        ),
        MethodSpec(
            "cosine_a", "cosineA", ("A", "B"), (ALPHA,), cosine.cosine_a, False, keeps_key=cosine.keeps_vae,
            prepass=cosine.prepass_a, finish=cosine.finish_prepass,
        ),
        MethodSpec(
            "cosine_b", "cosineB", ("A", "B"), (ALPHA,), cosine.cosine_b, False, keeps_key=cosine.keeps_vae,
            prepass=cosine.prepass_b, finish=cosine.finish_prepass,
        ),
        MethodSpec("ties", "TIES", ("base", "M1"), (STRENGTH, DENSITY, SIGN), modern.ties, False, variadic=True),
        MethodSpec("dare", "DARE", ("base", "M1"), (STRENGTH, DROP, SEED), modern.dare, False, needs_key=True,
                   variadic=True),
        MethodSpec("dare_ties", "DARE-TIES", ("base", "M1"), (STRENGTH, DROP, SEED, SIGN), modern.dare_ties, False,
                   needs_key=True, variadic=True),
        MethodSpec(
            "della", "DELLA", ("base", "M1"),
            (STRENGTH, DENSITY, ParamSpec("epsilon", 0.1, 0.0, 1.0, vector=False, enforce=True), SEED,
             ParamSpec("elect", 1.0, 0.0, 1.0, vector=False, boolean=True)),
            modern.della, False, needs_key=True, variadic=True,
        ),
        MethodSpec("slerp", "SLERP", ("A", "B"), (ParamSpec("alpha", 0.5),), modern.slerp, False, _ws_passthrough),
        MethodSpec(
            "geometric_median", "geometric median", ("M1", "M2"),
            (ParamSpec("eps", 1e-6, 0.0, 1.0, vector=False, enforce=True),
             ParamSpec("max_iter", 100.0, 1.0, 1e6, vector=False, integer=True, enforce=True)),
            modern.geometric_median, False, variadic=True,
        ),
        MethodSpec("model_stock", "model stock", ("base", "M1", "M2"), (), modern.model_stock, False,
                   variadic=True),
        MethodSpec("add_perpendicular", "add perpendicular", ("A", "B", "C"), (STRENGTH,), modern.add_perpendicular,
                   False, _alpha_zero),
        MethodSpec("clip", "weights clipping", ("x", "A", "B"), (), modern.clip, True),
        MethodSpec(
            "cast", "output dtype hint", ("x",),
            (ParamSpec("dtype", "fp16", vector=False, choices=CAST_DTYPES),),
            lambda x, dtype: x, True, lambda p: 0,
        ),
        MethodSpec("n_average", "N-model average", ("M1", "M2"),
                   (ParamSpec("weights", 1.0, vector=False, per_model=True),), modern.n_average, True,
                   variadic=True),
        MethodSpec(
            "adjust", "Adjust", ("x",), (ParamSpec("values", adjust.parse_adjust(""), vector=False, text=True),),
            adjust.adjust, False, lambda p: 0 if not any(p["values"].numbers) else None, needs_key=True,
            keeps_key=lambda key: not adjust.touches(key),
        ),
        MethodSpec("task_arithmetic", "task arithmetic", ("base", "M1"), (ParamSpec("alpha", 1.0, per_model=True),),
                   modern.task_arithmetic, True,
                   _alpha_zero, variadic=True),
    )
}  # fmt: skip

MODE_ALIASES = {"ws": "weighted_sum", "add": "add_difference", "triple": "triple_sum", "twice": "sum_twice"}


def get_method(name: str) -> MethodSpec:
    from lib_merge.errors import RecipeTypeError

    try:
        return METHODS[MODE_ALIASES.get(name, name)]
    except KeyError:
        raise RecipeTypeError(f"unknown merge method {name!r}; known: {', '.join(METHODS)}") from None
