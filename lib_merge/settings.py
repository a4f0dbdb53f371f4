"""Merge settings as one dataclass, and the recipe they describe (SPEC §5.6).

The CLI flags, the WebUI's widgets and the HTTP API all fill a MergeSettings; only this
module turns one into a recipe, so every surface builds the same recipe for the same choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lib_merge.errors import InvalidComboError, ParameterError, UnsupportedError
from lib_merge.methods import get_method
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef


@dataclass
class MergeSettings:
    a: str
    b: str
    mode: str = "weighted_sum"
    c: str | None = None
    alpha: float | None = None  # None: the method's default
    beta: float | None = None
    blocks: str | None = None  # alpha as a block vector (list or named form)
    preset: str | None = None  # alpha as a preset name
    calc: str = "normal"  # calc mode (SPEC §4.3)
    gamma: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def build_recipe(s: MergeSettings) -> MergeNode:
    """The recipe of these settings; impossible combinations are refused with what is valid."""
    if s.blocks and s.preset:
        raise ParameterError("give block weights either as a vector or as a preset, not both")
    if (s.calc or "normal") != "normal":
        raise UnsupportedError(f"calc mode {s.calc!r} is not available yet; valid calc modes: normal")
    spec = get_method(s.mode)
    models = [s.a, s.b] + ([s.c] if s.c else [])
    if len(models) < len(spec.inputs):
        raise InvalidComboError(f"mode {spec.name} needs models {', '.join(spec.inputs)}: add model C")
    if len(models) > len(spec.inputs):
        raise InvalidComboError(f"mode {spec.name} takes models A and B only; model C is not used")
    for name in ("beta", "gamma"):
        if getattr(s, name) is not None and name not in {p.name for p in spec.params}:
            raise ParameterError(f"{name} is not used by mode {spec.name}")
    params: dict[str, object] = {}
    if s.blocks or s.preset:
        params["alpha"] = BlocksSpec(s.blocks or s.preset, preset=s.preset, default=s.alpha)
    elif s.alpha is not None:
        params["alpha"] = float(s.alpha)
    if s.beta is not None:
        params["beta"] = float(s.beta)
    for p in spec.params:
        params.setdefault(p.name, p.default)
    return MergeNode(spec.name, tuple(ModelRef(m) for m in models), params)
