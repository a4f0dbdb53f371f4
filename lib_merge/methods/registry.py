"""How a merge method describes itself: a decorator that reads the function's signature.

A method is a plain function of tensors. Its positional parameters are its inputs, its
keyword-only parameters with defaults are the user's parameters, and their annotations say
the rest (bounds, whole numbers, words, block vectors). Everything that shows, checks or
prints a parameter (recipes, the CLI, the HTTP API, the tabs, XYZ axes) reads the MethodSpec
built here, so a parameter is defined once, at its method.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch


@dataclass(frozen=True)
class Bounds:
    """The range a slider shows; with `enforce`, values outside it are refused before the merge."""

    low: float = -1.0
    high: float = 2.0
    enforce: bool = False
    slider: tuple[float, float] | None = None  # a narrower range for sliders, where the valid one is vast


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


SCALAR = _Marker("SCALAR")  # a number that takes no block vector
PER_MODEL = _Marker("PER_MODEL")  # also a list of numbers, one per model (after the base, if any)
TEXT = _Marker("TEXT")  # a value object written as one positional string after the models (Adjust)

# The parameter types the methods share.
Weight = Annotated[float, Bounds()]  # alpha, beta: a number or a block vector
Unit = Annotated[float, Bounds(0.0, 1.0, enforce=True)]
UnitScalar = Annotated[float, Bounds(0.0, 1.0, enforce=True), SCALAR]
DropRate = Annotated[float, Bounds(0.0, 0.999999, enforce=True)]
Seed = Annotated[int, Bounds(0, 2**63 - 1, enforce=True)]
# TIES's sign election: by the sum of the deltas, by the count of signs; "mean" elects by the sign of
# their mean, which is the sign of their sum (the same result, named as other tools name it).
Sign = Literal["sum", "count", "mean"]

# Models besides A a method takes: 16 where a key's inputs are all in memory at once, 64 where the
# method reads them a slice at a time (streams=True), so its memory does not grow with their count.
MAX_MODELS = 16
MAX_STREAMED_MODELS = 64

# The largest weight an unbounded parameter takes (SuperMerger's sliders stop at -1 and 2).
MAX_MAGNITUDE = 1000.0

KINDS = ("mode", "calc", "method", "op")  # Merge tab modes, calc-mode methods, modern methods, recipe-only ops
# Keyword arguments the engine passes, never the user ("prepared": a key's value from the method's pre-pass).
ENGINE_ARGUMENTS = ("key", "out", "permutation", "prepared")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: float | int | str | object
    low: float = -1.0
    high: float = 2.0
    vector: bool = True  # accepts a block vector
    integer: bool = False  # a whole number, kept exact (seed, axis)
    enforce: bool = False  # values outside [low, high] are refused before the merge
    choices: tuple[str, ...] = ()  # a word parameter (TIES's sign) instead of a number
    boolean: bool = False  # True/False in recipes, 1.0/0.0 inside
    text: bool = False  # a value object written as one positional string after the models (Adjust)
    per_model: bool = False  # also takes a list of numbers, one per model
    slider: tuple[float, float] | None = None
    parse_text: Callable[[str], object] | None = field(default=None, compare=False)  # text → the value object

    @property
    def slider_range(self) -> tuple[float, float]:
        return self.slider or (self.low, self.high)

    @property
    def numeric(self) -> bool:
        return not (self.choices or self.text or self.boolean)

    @property
    def hard_range(self) -> tuple[float, float]:
        """The values refused before a merge lie outside this: the declared range where it is enforced,
        else ±MAX_MAGNITUDE (far past any real weight, near enough that fp32 arithmetic cannot overflow)."""
        return (self.low, self.high) if self.enforce else (-MAX_MAGNITUDE, MAX_MAGNITUDE)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str  # the UI / SuperMerger name
    kind: str  # one of KINDS
    inputs: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    fn: Callable[..., torch.Tensor]
    elementwise: bool = False  # may be called on matching slices of its inputs
    # Per-key shortcut: given the params, the index of the input the result equals, or None.
    passthrough: Callable[[dict], int | None] = lambda p: None
    # The same result computed on fp16/bf16 inputs with fp32 arithmetic inside one op, written
    # to `out` (a single rounding, so bit-identical to the fp32 path); or into an fp32 `out`,
    # bit-identical to widening the inputs and computing there.
    fused: Callable[..., torch.Tensor] | None = None
    # Whether finite inputs of moderate size give a finite result with these params (a convex
    # combination): the engine then skips checking results whose inputs were checked already.
    bounded: Callable[[dict], bool] = lambda p: False
    needs_key: bool = False  # fn also gets key= (per-key seeds)
    keeps_key: Callable[[str], bool] | None = None  # keys this method leaves as its first input
    # A first pass over every key (A and B only): prepass(a, b) per key, then finish(parts) gives
    # the extra keyword arguments of the main pass (the cosine modes' similarity range). A prepass
    # that returns (part, prepared) hands `prepared` to that key's main pass as prepared=.
    prepass: Callable[[torch.Tensor, torch.Tensor], object] | None = None
    finish: Callable[[list], dict[str, float]] | None = None
    variadic: bool = False  # inputs: the named ones, then any number of further models
    # Its inputs may be Operands, read a slice at a time (methods/operand.py): memory independent of their count.
    streams: bool = False
    # Inputs named by keyword in recipes (re-basin's ref=), after the positional ones: they shape
    # how the method reads its other inputs and are never read per key themselves.
    references: tuple[str, ...] = ()
    # A calc mode's names in the Merge tab, each with the parameters it fixes (tensor2: axis=1), and
    # other spellings of them (SuperMerger's "smoothAdd MT"); empty for every other kind.
    calc_modes: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    calc_aliases: tuple[tuple[str, str], ...] = ()

    @property
    def max_models(self) -> int:
        """Inputs at most, A counted."""
        return 1 + (MAX_STREAMED_MODELS if self.streams else MAX_MODELS)

    @property
    def per_key_inputs(self) -> int:
        return len(self.inputs) - len(self.references)

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def takes(self, name: str) -> bool:
        return any(p.name == name for p in self.params)


def alpha_is_zero(params: dict) -> int | None:
    """Passthrough for methods that give their first input back at α = 0."""
    alpha = params["alpha"]
    return 0 if (not any(alpha) if isinstance(alpha, tuple) else alpha == 0) else None


def alpha_at_an_end(params: dict) -> int | None:
    """Passthrough for interpolations: A at α = 0, B at α = 1."""
    return 0 if params["alpha"] == 0 else 1 if params["alpha"] == 1 else None


def merge_method(
    label: str,
    kind: str,
    *,
    at_least: int = 0,
    elementwise: bool = False,
    passthrough: Callable[[dict], int | None] | None = None,
    fused: Callable[..., torch.Tensor] | None = None,
    bounded: Callable[[dict], bool] | None = None,
    keeps_key: Callable[[str], bool] | None = None,
    prepass: Callable[[torch.Tensor, torch.Tensor], object] | None = None,
    finish: Callable[[list], dict[str, float]] | None = None,
    references: tuple[str, ...] = (),
    calc_modes: dict[str, dict[str, object]] | None = None,
    calc_aliases: dict[str, str] | None = None,
    streams: bool = False,
) -> Callable[[Callable], Callable]:
    """Mark a function as a merge method; its MethodSpec is built from its signature.

    `at_least`: for a function with *models, how many further models it needs at least.
    `references`: models the recipe names by keyword (`ref=A`), listed after the positional inputs.
    `calc_modes` (kind "calc"): its calc-mode names with the parameters each fixes; default: the label.
    `calc_aliases`: other spellings of those names; a label that differs from them is one.
    `streams`: the function also takes Operands (methods/operand.py) and reads them a slice at a time.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    modes = dict(calc_modes or ({label: {}} if kind == "calc" else {}))
    aliases = dict(calc_aliases or {})
    if modes and label not in modes:
        aliases.setdefault(label, next(iter(modes)))

    def register(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        inputs: list[str] = []
        variadic = False
        params: list[ParamSpec] = []
        for p in signature.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                inputs.append(p.name.upper() if p.name in ("a", "b", "c") else p.name)
            elif p.kind is p.VAR_POSITIONAL:
                variadic = True
                inputs.extend(f"M{i}" for i in range(1, at_least + 1))
            elif p.kind is p.KEYWORD_ONLY and p.name not in ENGINE_ARGUMENTS and p.default is not p.empty:
                params.append(_param_spec(fn.__name__, p.name, hints.get(p.name, float), p.default))
        inputs.extend(references)
        fn.method_spec = MethodSpec(
            name=fn.__name__,
            label=label,
            kind=kind,
            inputs=tuple(inputs),
            params=tuple(params),
            fn=fn,
            elementwise=elementwise,
            passthrough=passthrough or (lambda p: None),
            fused=fused,
            bounded=bounded or (lambda p: False),
            needs_key="key" in signature.parameters,
            keeps_key=keeps_key,
            prepass=prepass,
            finish=finish,
            variadic=variadic,
            streams=streams,
            references=references,
            calc_modes=tuple((name, tuple(fixed.items())) for name, fixed in modes.items()),
            calc_aliases=tuple(aliases.items()),
        )
        return fn

    return register


def _param_spec(method: str, name: str, hint: object, default: object) -> ParamSpec:
    """One user parameter from its annotation and default."""
    metadata: tuple = ()
    if typing.get_origin(hint) is Annotated:
        hint, *rest = typing.get_args(hint)
        metadata = tuple(rest)
    bounds = next((m for m in metadata if isinstance(m, Bounds)), Bounds())
    origin = typing.get_origin(hint)
    flags = {
        "per_model": PER_MODEL in metadata,
        "low": bounds.low,
        "high": bounds.high,
        "enforce": bounds.enforce,
        "slider": bounds.slider,
    }
    if origin is Literal:
        return ParamSpec(name, default, vector=False, choices=tuple(typing.get_args(hint)), **flags)
    if TEXT in metadata:  # the value's class reads its own text (AdjustValues, LoraRef)
        return ParamSpec(name, default, vector=False, text=True, parse_text=hint.from_text, **flags)
    if hint is bool:
        return ParamSpec(name, float(default), vector=False, boolean=True, **flags)
    if hint is int:
        return ParamSpec(name, int(default), vector=False, integer=True, **flags)
    if hint is float or (origin in (typing.Union, types.UnionType) and float in typing.get_args(hint)):
        return ParamSpec(name, float(default), vector=SCALAR not in metadata, **flags)
    raise TypeError(f"{method}(): parameter {name!r} has a type no recipe can hold: {hint!r}")
