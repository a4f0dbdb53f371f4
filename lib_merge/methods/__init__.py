"""Merge methods: one pure function per method, each registered where it is defined.

A method gets fp32 tensors (one per input, the same shape) and per-key parameters and returns
a tensor of that shape. Elementwise methods may also be called on matching slices of their
inputs, which lets the engine work in bounded chunks. `@merge_method` (registry.py) reads each
function's signature; METHODS is the read-only table of them, in the order the modules list them.
"""

from __future__ import annotations

from types import MappingProxyType, ModuleType

from lib_merge.errors import RecipeTypeError
from lib_merge.methods import adjust, calc, cast, classic, cosine, lora, modern, rebasin
from lib_merge.methods.registry import MAX_STREAMED_MODELS, MethodSpec, ParamSpec

__all__ = ["METHODS", "MODE_ALIASES", "MethodSpec", "ParamSpec", "get_method", "model_limit", "names_of_kind"]


def _collect(*modules: ModuleType) -> MappingProxyType:
    specs = [f.method_spec for m in modules for f in vars(m).values() if hasattr(f, "method_spec")]
    return MappingProxyType({spec.name: spec for spec in specs})


METHODS: MappingProxyType[str, MethodSpec] = _collect(classic, calc, cosine, modern, adjust, cast, lora, rebasin)
MODE_ALIASES = MappingProxyType(
    {"ws": "weighted_sum", "add": "add_difference", "triple": "triple_sum", "twice": "sum_twice"}
)


def names_of_kind(kind: str) -> tuple[str, ...]:
    """Method names of one kind: "mode" (the Merge tab's modes), "method" (modern methods), "calc", "op"."""
    return tuple(name for name, spec in METHODS.items() if spec.kind == kind)


def get_method(name: str, kind: str | None = None) -> MethodSpec:
    """The method called `name` (or a mode alias); with `kind`, only methods of that kind count, and
    the error lists those."""
    spec = METHODS.get(MODE_ALIASES.get(name, name))
    if spec is None and kind == "mode":  # SuperMerger's names of the modes: "Weight sum", "Add difference"
        spec = next((s for s in METHODS.values() if s.kind == "mode" and s.label.lower() == name.strip().lower()), None)
    if spec is None or (kind is not None and spec.kind != kind):
        if kind == "mode":
            labels = ", ".join(f"{n} ({METHODS[n].label})" for n in names_of_kind("mode"))
            raise RecipeTypeError(f"unknown mode {name!r}; modes: {labels}")
        if kind == "method":
            raise RecipeTypeError(f"unknown method {name!r}; methods: {', '.join(names_of_kind('method'))}")
        raise RecipeTypeError(f"unknown merge method {name!r}; known: {', '.join(METHODS)}")
    return spec


def model_limit(spec: MethodSpec) -> str:
    """What a refusal of too many models says: this method's limit, and which methods take more."""
    text = f"{spec.name} takes at most {spec.max_models - 1} models besides A"
    if spec.streams:
        return text
    more = ", ".join(name for name, s in METHODS.items() if s.streams and s.variadic)
    return f"{text} (it holds all of a key's inputs at once; {more} take up to {MAX_STREAMED_MODELS})"
