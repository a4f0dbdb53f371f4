"""An XYZ plan (axes + the Merge tab's settings + generation overrides) and its cells.

Everything is checked here, before any work: every cell's recipe is built and validated, so a bad
vector fails the plan and not cell 17. Cells come Z outer, Y, X inner.
"""

from __future__ import annotations

import copy
import itertools
import secrets
from dataclasses import asdict, dataclass, field

from lib_merge.app.dice import DiceSettings, roll_seeds
from lib_merge.app.forms import checked_form_fields, form_from_json
from lib_merge.app.json_fields import checked_fields, json_type
from lib_merge.app.plots.axes import AxisValue, axis_type, parse_axis
from lib_merge.app.plots.draft import Draft, PlanContext
from lib_merge.app.ports import GenSettings
from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import AlloyError, ParameterError, PlanError
from lib_merge.methods import METHODS, get_method
from lib_merge.methods.adjust import parse_adjust
from lib_merge.recipe import parse_recipe, parse_vector, print_recipe
from lib_merge.recipe.form import MergeSettings, MethodSettings, compile_form, method_for
from lib_merge.recipe.nodes import Node

AXES = ("x", "y", "z")
REPEATABLE = ("add_elemental", "random")


@dataclass
class AxisSpec:
    type: str
    values: str


@dataclass
class PlanOptions:
    swap_xy: bool = False
    restore_after: bool = False  # restore model A after the plot
    individual: bool = False  # also return each cell's images
    no_grid: bool = False  # single images only (at most 100)
    save_csv: bool = False  # a CSV of cells next to the grid
    save_models: bool = False  # save each cell's merge as a file
    checker_gif: bool = False  # effective elemental checker: a 2-frame GIF (baseline, cell) per cell


@dataclass
class XYZPlan:
    x: AxisSpec
    y: AxisSpec | None = None
    z: AxisSpec | None = None
    merge: dict = field(default_factory=dict)  # the merge route's form: mode settings, or "method" and "params"
    recipe: str | None = None  # a whole recipe instead of merge settings
    gen: dict = field(default_factory=dict)  # GenSettings overrides
    dice: dict = field(default_factory=dict)  # DiceSettings for the random axis
    options: PlanOptions = field(default_factory=PlanOptions)
    plot_seed: int | None = None  # the seed drawn once for -1
    dice_seeds: list[int] | None = None  # the seed of each Dice roll, drawn once

    def axes(self) -> list[tuple[str, AxisSpec]]:
        return [(name, spec) for name, spec in zip(AXES, (self.x, self.y, self.z), strict=True) if spec is not None]

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """One line for the queue: its axes and their values."""
        return " | ".join(f"{name.upper()}: {spec.type} {spec.values}" for name, spec in self.axes())[:120]

    @classmethod
    def from_dict(cls, data: dict) -> XYZPlan:
        if not isinstance(data, dict) or not isinstance(data.get("x"), dict):
            raise PlanError('a plan is a JSON object with at least "x": {"type": ..., "values": ...}')
        try:
            fields_given = checked_fields(_PlanFields, data, "the plan", loose=("x", "y", "z"))
            return cls(
                _axis(data, "x"),  # type: ignore[arg-type]
                _axis(data, "y"),
                _axis(data, "z"),
                checked_form_fields(data.get("merge"), '"merge"'),
                fields_given.get("recipe"),
                checked_fields(GenSettings, data.get("gen"), '"gen"'),
                checked_fields(DiceSettings, data.get("dice"), '"dice"'),
                PlanOptions(**checked_fields(PlanOptions, data.get("options"), '"options"')),
                fields_given.get("plot_seed"),
                fields_given.get("dice_seeds"),
            )
        except ParameterError as e:
            raise PlanError(str(e)) from None


@dataclass
class _PlanFields:
    """The top-level fields of a plan's JSON and their types (the axes are checked by `_axis`)."""

    x: dict
    y: dict | None = None
    z: dict | None = None
    merge: dict | None = None
    recipe: str | None = None
    gen: dict | None = None
    dice: dict | None = None
    options: dict | None = None
    plot_seed: int | None = None
    dice_seeds: list[int] | None = None


def _axis(data: dict, name: str) -> AxisSpec | None:
    """An axis of a plan's JSON: {"type": word, "values": text or a list of values}, or none."""
    raw = data.get(name)
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise PlanError(f'axis "{name}" must be an object {{"type": ..., "values": ...}}, not {json_type(raw)}')
    unknown = set(raw) - {"type", "values"}
    if unknown:
        raise PlanError(f'axis "{name}": unknown fields {", ".join(sorted(map(str, unknown)))}; known: type, values')
    kind, values = raw.get("type"), raw.get("values", "")
    if not kind:
        return None
    if not isinstance(kind, str):
        raise PlanError(f'axis "{name}": "type" must be a string, not {json_type(kind)}')
    if isinstance(values, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        values = ", ".join(str(v) for v in values)
    if not isinstance(values, str):
        raise PlanError(f'axis "{name}": "values" must be text or a list of values, not {json_type(values)}')
    return AxisSpec(kind, values)


@dataclass
class Cell:
    x: int
    y: int
    z: int
    labels: tuple[str, str, str]
    settings: MergeSettings | MethodSettings | None
    recipe: str | None  # recipe text of a whole-recipe cell (merge id, recipe axes)
    gen: GenSettings
    merge_key: str  # the recipe's text (model paths as given): equal keys merge once
    root: Node | None = None  # the cell's recipe, built and checked once, here
    dice_seed: int | None = None
    checker: str | None = None  # effective elemental checker: the item, "" for the baseline
    checker_axis: int | None = None  # 0, 1, 2 for X, Y, Z: the baseline cell has index 0 there
    batch_prompt: bool = False  # prompt batch axis: cells that differ only in prompt generate as one batch


def split_plan(plan: XYZPlan) -> list[XYZPlan]:
    """`|` in axis values splits a plot into several plans; they share one seed drawn here for -1."""
    plan = copy.deepcopy(plan)
    draw_plot_seed(plan)
    choices = []
    for _, spec in plan.axes():
        choices.append(spec.values.split("|") if spec is not None else [None])
    plans = []
    for combo in itertools.product(*choices):
        part = copy.deepcopy(plan)
        for (name, spec), values in zip(plan.axes(), combo, strict=True):
            setattr(part, name, AxisSpec(spec.type, values))
        plans.append(part)
    return plans


def draw_plot_seed(plan: XYZPlan) -> None:
    """txt2img seed -1 (or none) is fixed once per plot."""
    if plan.plot_seed is None:
        seed = plan.gen.get("seed")
        plan.plot_seed = int(seed) if seed not in (None, "", -1, "-1") else secrets.randbits(31)


def expand(plan: XYZPlan, context: PlanContext) -> list[Cell]:
    """Every cell of the plot, Z outer, Y, X inner; raises PlanError before any work."""
    draw_plot_seed(plan)
    axes = plan.axes()
    if plan.x is None or not plan.x.type:
        raise PlanError("X axis has no type")
    types = [axis_type(spec.type).id for _, spec in axes]
    for t in set(types):
        if types.count(t) > 1 and t not in REPEATABLE:
            raise PlanError(f"the axis type {axis_type(t).label!r} is on two axes")
    parsed: list[list[AxisValue]] = []
    for (name, spec), t in zip(axes, types, strict=True):
        try:
            values = parse_axis(t, spec.values, context.schema)
        except PlanError as e:
            raise PlanError(f"{name.upper()} {e}") from None
        if not values:
            raise PlanError(f"{name.upper()} axis has no values")
        if t == "elemental_checker":
            values = [AxisValue("baseline", "")] + values
        parsed.append(values)
    for t in types:
        partners = axis_type(t).partners
        if partners and not set(partners) & set(types):
            wanted = " or ".join(axis_type(p).label for p in partners)
            raise PlanError(f"the {axis_type(t).label} axis needs an axis of {wanted} beside it")
    whole = [t for t in types if axis_type(t).kind == "whole"]
    if whole and any(axis_type(t).kind == "merge" for t in types):
        label = axis_type(whole[0]).label
        raise PlanError(f"the {label} axis replaces the whole recipe; pair it with seed or prompt axes")
    base = _base_settings(plan, whole)
    if "beta" in types or "mbw_beta" in types:
        _check_beta(base)
    dice = DiceSettings.from_dict(plan.dice)
    if "random" in types:
        count = max(len(v) for v, t in zip(parsed, types, strict=True) if t == "random")
        if not plan.dice_seeds or len(plan.dice_seeds) < count:
            plan.dice_seeds = roll_seeds(dice, count)
    while len(parsed) < 3:
        parsed.append([AxisValue("", None)])
        types.append("")
    cells = []
    for zi, zv in enumerate(parsed[2]):
        for yi, yv in enumerate(parsed[1]):
            for xi, xv in enumerate(parsed[0]):
                chosen = [(t, v) for t, v in zip(types, (xv, yv, zv), strict=True) if t]
                try:
                    cells.append(_cell(plan, context, base, dice, chosen, (xi, yi, zi)))
                except AlloyError as e:
                    where = ", ".join(f"{axis_type(t).label} {v.label!r}" for t, v in chosen)
                    raise PlanError(f"cell ({where}): {e}") from None
    return cells


def _unchanged_a(s: MergeSettings, schema: BlockSchema) -> str | None:
    """ "α = 0 reuse": a weighted sum whose every α is 0, without Adjust, is model A itself."""
    if get_method(s.mode).name != "weighted_sum" or (s.calc or "normal") != "normal" or s.elemental:
        return None
    if s.adjust and any(parse_adjust(s.adjust).numbers):
        return None
    alpha = s.alpha if s.alpha is not None else get_method("weighted_sum").param("alpha").default
    if s.blocks or s.preset:
        vector = parse_vector(s.blocks or s.preset, schema, default=alpha).vector
        zero = not any(vector.values) and not vector.vae
    else:
        zero = alpha == 0
    return f"model A unchanged: {s.a}" if zero else None


def _base_settings(plan: XYZPlan, whole: list[str]) -> MergeSettings | MethodSettings | None:
    if whole or (plan.recipe and not plan.merge):
        return None
    try:
        return form_from_json(plan.merge, '"merge"')
    except ParameterError as e:
        raise PlanError(f"the plot's merge: {e}") from None


def _check_beta(base: MergeSettings | MethodSettings | None) -> None:
    if not isinstance(base, MergeSettings):
        return
    method = get_method(method_for(base.mode, base.calc))
    if "beta" not in {p.name for p in method.params}:
        modes = [m.label for m in METHODS.values() if m.kind in ("mode", "calc") and m.takes("beta")]
        raise PlanError(f"beta axis needs {', '.join(modes)}")


def _cell(plan, context, base, dice, chosen, index) -> Cell:
    settings = copy.deepcopy(base)
    gen = GenSettings(**{k: v for k, v in plan.gen.items() if k in GenSettings.__dataclass_fields__})
    gen.seed = plan.plot_seed
    draft = Draft(settings, plan.recipe if base is None else None, gen, context, dice, plan.dice_seeds or [])
    by_type = {t: v for t, v in chosen}
    consumed = {p for t in by_type for p in axis_type(t).partners if p in by_type}
    for t, v in chosen:
        if not axis_type(t).partners and t not in consumed:
            axis_type(t).apply(draft, v.value)
    for t, v in chosen:
        partners = axis_type(t).partners
        if partners:
            partner = next(p for p in partners if p in by_type)
            axis_type(t).apply(draft, v.value, partner, by_type[partner].value)
    if draft.settings is not None:
        if isinstance(draft.settings, MergeSettings) and draft.settings.blocks:
            parse_vector(draft.settings.blocks, context.schema, default=draft.settings.alpha)
        root = compile_form(draft.settings)  # builds (and so checks) the recipe either way
        unchanged = _unchanged_a(draft.settings, context.schema) if isinstance(draft.settings, MergeSettings) else None
        key = unchanged or print_recipe(root)
    else:
        if not draft.recipe:
            raise PlanError("no merge settings and no recipe for the plot")
        root = parse_recipe(draft.recipe)
        key = print_recipe(root)
    labels = tuple(v.label for _, v in chosen) + ("",) * (3 - len(chosen))
    axis = next((i for i, (t, _) in enumerate(chosen) if t == "elemental_checker"), None)
    batch = any(t == "prompt_batch" for t, _ in chosen)
    return Cell(*index, labels, draft.settings, draft.recipe, draft.gen, key, root, draft.dice_seed, draft.checker,
                axis, batch)  # fmt: skip


def swept_formula(plan: XYZPlan, base: MergeSettings | MethodSettings | None) -> str:
    """The corner text: the mode's formula with the swept parameters shown as X / Y."""
    if base is None:
        return "recipe"
    if isinstance(base, MethodSettings):
        return base.method
    names = {spec.type: axis.upper() for axis, spec in plan.axes() if axis in ("x", "y")}
    alpha = names.get("alpha") or names.get("alpha_beta") or names.get("param:alpha") or "α"
    beta = names.get("beta") or names.get("alpha_beta") or names.get("param:beta") or "β"
    formulas = {
        "weighted_sum": f"A·(1−{alpha}) + B·{alpha}",
        "add_difference": f"A + (B−C)·{alpha}",
        "triple_sum": f"A·(1−{alpha}−{beta}) + B·{alpha} + C·{beta}",
        "sum_twice": f"(A·(1−{alpha}) + B·{alpha})·(1−{beta}) + C·{beta}",
    }
    try:
        mode = get_method(base.mode).name
    except AlloyError:
        mode = base.mode
    return formulas.get(mode, mode)
