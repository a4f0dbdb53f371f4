"""XYZ axis types: each one is a single entry holding how its text is read and what its value does to a cell.

The parsers live in axis_values.py, the effects on a cell's draft in draft.py; a new axis is one entry
here. `param:NAME` sweeps any declared parameter of the plot's method or mode (numbers, ranges, words).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib_merge.app.plots import axis_values as read
from lib_merge.app.plots import draft as do
from lib_merge.app.plots.axis_values import AxisValue
from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import PlanError
from lib_merge.methods import METHODS

__all__ = ["AXIS_TYPES", "AxisType", "AxisValue", "axis_type", "parse_axis", "SUPERMERGER_LABELS"]


@dataclass(frozen=True)
class AxisType:
    id: str
    label: str
    kind: str  # "merge": changes the recipe, "gen": only generation, "whole": replaces the recipe
    parse: Callable[[str, BlockSchema], list[AxisValue]]
    apply: Callable[..., None]  # (draft, value) or, for pinpoint axes, (draft, value, partner, partner's value)
    partners: tuple[str, ...] = ()  # pinpoint axes: the axis whose value they place


_NUMERIC = ("alpha", "beta", "alpha_beta")
AXIS_TYPES: dict[str, AxisType] = {
    t.id: t
    for t in (
        AxisType("alpha", "alpha", "merge", read.float_values("alpha"), do.setting("alpha")),
        AxisType("beta", "beta", "merge", read.float_values("beta"), do.setting("beta")),
        AxisType("alpha_beta", "alpha and beta", "merge", read.alpha_beta, do.set_alpha_beta),
        AxisType("seed", "seed", "gen", read.seeds, do.seed),
        AxisType("mbw_alpha", "mbw alpha", "merge", read.vectors("mbw alpha"), do.setting("blocks", "preset")),
        AxisType("mbw_beta", "mbw beta", "merge", read.vectors("mbw beta"), do.setting("beta_blocks")),
        AxisType("mbw_alpha_beta", "mbw alpha and beta", "merge", read.vector_pairs, do.mbw_alpha_beta),
        AxisType("model_a", "model A", "merge", read.names, do.setting("a")),
        AxisType("model_b", "model B", "merge", read.names, do.setting("b")),
        AxisType("model_c", "model C", "merge", read.names, do.setting("c")),
        AxisType("pinpoint_blocks", "pinpoint blocks", "merge", read.pinpoint_blocks, do.pinpoint_blocks, _NUMERIC),
        AxisType("include", "include blocks", "merge", read.filter_targets("include blocks"), do.key_filter("include")),
        AxisType("exclude", "exclude blocks", "merge", read.filter_targets("exclude blocks"), do.key_filter("exclude")),
        AxisType("add_include", "add include", "merge", read.filter_targets("add include"),
                 do.key_filter("include", add=True)),
        AxisType("add_exclude", "add exclude", "merge", read.filter_targets("add exclude"),
                 do.key_filter("exclude", add=True)),
        AxisType("elemental", "elemental", "merge", read.elementals("elemental"), do.elemental),
        AxisType("add_elemental", "add elemental", "merge", read.elementals("add elemental"), do.add_elemental),
        AxisType("pinpoint_element", "pinpoint element", "merge", read.elements("pinpoint element"),
                 do.pinpoint_element, ("alpha",)),
        AxisType("elemental_checker", "effective elemental checker", "merge",
                 read.elements("effective elemental checker"), do.checker),
        AxisType("adjust", "adjust", "merge", read.adjusts, do.setting("adjust")),
        AxisType("pinpoint_adjust", "pinpoint adjust", "merge", read.adjust_names, do.pinpoint_adjust, ("alpha",)),
        AxisType("calcmode", "calcmode", "merge", read.calc_modes, do.setting("calc")),
        AxisType("rebasin", "re-basin", "merge", read.switches("re-basin"), do.setting("rebasin")),
        AxisType("prompt", "prompt", "gen", read.prompt_lines, do.gen("prompt")),
        AxisType("prompt_multiline", "prompt (multi-line)", "gen", read.prompt_paragraphs, do.gen("prompt")),
        AxisType("prompt_batch", "prompt batch", "gen", read.prompt_paragraphs, do.gen("prompt")),
        AxisType("random", "random", "merge", read.random, do.random),
        AxisType("merge_id", "merge id", "whole", read.merge_ids, do.merge_id),
        AxisType("recipe", "recipe", "whole", read.recipe_files, do.recipe_file),
    )
}  # fmt: skip
PARAM_PREFIX = "param:"
# SuperMerger's labels, accepted in imported presets.
SUPERMERGER_LABELS = {
    "alpha": "alpha", "beta": "beta", "alpha and beta": "alpha_beta", "seed": "seed",
    "mbw alpha": "mbw_alpha", "mbw beta": "mbw_beta", "mbw alpha and beta": "mbw_alpha_beta",
    "model_A": "model_a", "model_B": "model_b", "model_C": "model_c", "pinpoint blocks": "pinpoint_blocks",
    "include blocks": "include", "exclude blocks": "exclude", "add include": "add_include",
    "add exclude": "add_exclude", "elemental": "elemental", "add elemental": "add_elemental",
    "pinpoint element": "pinpoint_element", "effective elemental checker": "elemental_checker",
    "adjust": "adjust", "pinpoint adjust": "pinpoint_adjust", "calcmode": "calcmode", "prompt": "prompt",
    "random": "random",
}  # fmt: skip


def param_names() -> list[str]:
    """Every parameter name a merge method or mode declares (what `param:NAME` axes may sweep)."""
    names: dict[str, None] = {}
    for spec in METHODS.values():
        if spec.kind != "op":
            names.update((p.name, None) for p in spec.params if not p.text)
    return list(names)


def _param_axis(name: str) -> AxisType:
    """`param:NAME`: the values are read by the parameter's own declaration when each cell is built."""
    if name not in param_names():
        raise PlanError(f"unknown parameter {name!r} for a param: axis; parameters: {', '.join(param_names())}")
    return AxisType(PARAM_PREFIX + name, name, "merge", read.param_values(name), do.param(name))


def axis_type(type_id: Any) -> AxisType:
    if isinstance(type_id, str) and type_id.startswith(PARAM_PREFIX):
        return _param_axis(type_id[len(PARAM_PREFIX) :].strip())
    found = AXIS_TYPES.get(type_id) or AXIS_TYPES.get(SUPERMERGER_LABELS.get(type_id, ""))
    if found is None:
        known = ", ".join([*AXIS_TYPES, PARAM_PREFIX + "NAME"])
        raise PlanError(f"unknown axis type {type_id!r}; known: {known}")
    return found


def parse_axis(type_id: str, text: str, schema: BlockSchema) -> list[AxisValue]:
    """The values of one axis; an empty list is refused by the planner with the axis's name."""
    return axis_type(type_id).parse(str(text or ""), schema)
