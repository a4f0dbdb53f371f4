"""An XYZ plan (axes + the Merge tab's settings + generation overrides) and its cells.

Everything is checked here, before any work: every cell's recipe is built and validated, so a bad
vector fails the plan and not cell 17. Cells come Z outer, Y, X inner.
"""

from __future__ import annotations

import copy
import itertools
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lib_merge.app.dice import DiceSettings, roll, roll_seeds
from lib_merge.app.json_fields import checked_fields, json_type
from lib_merge.app.plots.axes import AxisValue, axis_type, parse_axis
from lib_merge.app.ports import GenSettings
from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import AlloyError, ParameterError, PlanError
from lib_merge.methods import get_method
from lib_merge.methods.adjust import NAMES as ADJUST_NAMES
from lib_merge.methods.adjust import parse_adjust
from lib_merge.paths import file_in_folders
from lib_merge.recipe import parse_recipe, parse_vector, print_recipe, read_recipe_file
from lib_merge.recipe.form import MergeSettings, build_recipe, method_for
from lib_merge.recipe.nodes import Node
from lib_merge.recipe.vectors import format_number

AXES = ("x", "y", "z")
REPEATABLE = ("add_elemental", "random")
_BETA_MODES = "Triple sum, Sum twice, tensor or extract"


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
    merge: dict = field(default_factory=dict)  # MergeSettings fields (the Merge tab)
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
                checked_fields(MergeSettings, data.get("merge"), '"merge"'),
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
class PlanContext:
    """What the planner needs from outside: the block schema of model A, history and recipe files."""

    schema: BlockSchema
    history_recipe: Callable[[int], str] | None = None  # history id (-1: last) -> recipe text
    recipes_dir: Path | None = None


@dataclass
class Cell:
    x: int
    y: int
    z: int
    labels: tuple[str, str, str]
    settings: MergeSettings | None
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


def _base_settings(plan: XYZPlan, whole: list[str]) -> MergeSettings | None:
    if whole or (plan.recipe and not plan.merge):
        return None
    merge = dict(plan.merge)
    if not merge.get("a") or not merge.get("b"):
        raise PlanError("choose models A and B for the plot")
    return MergeSettings(**merge)


def _check_beta(base: MergeSettings | None) -> None:
    if base is None:
        return
    method = get_method(method_for(base.mode, base.calc))
    if "beta" not in {p.name for p in method.params}:
        raise PlanError(f"beta axis needs {_BETA_MODES}")


def _cell(plan, context, base, dice, chosen, index) -> Cell:
    settings = copy.deepcopy(base)
    gen = GenSettings(**{k: v for k, v in plan.gen.items() if k in GenSettings.__dataclass_fields__})
    gen.seed = plan.plot_seed
    draft = _Draft(settings, plan.recipe if base is None else None, gen, context, dice, plan.dice_seeds or [])
    by_type = {t: v for t, v in chosen}
    consumed = {p for t in by_type for p in axis_type(t).partners if p in by_type}
    pinpoints = [(t, v) for t, v in chosen if axis_type(t).partners]
    for t, v in chosen:
        if not axis_type(t).partners and t not in consumed:
            _APPLY[t](draft, v.value)
    for t, v in pinpoints:
        partner = next(p for p in axis_type(t).partners if p in by_type)
        _APPLY[t](draft, v.value, partner, by_type[partner].value)
    if draft.settings is not None:
        if draft.settings.blocks:
            parse_vector(draft.settings.blocks, context.schema, default=draft.settings.alpha)
        root = build_recipe(draft.settings)  # builds (and so checks) the recipe either way
        key = _unchanged_a(draft.settings, context.schema) or print_recipe(root)
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


@dataclass
class _Draft:
    settings: MergeSettings | None
    recipe: str | None
    gen: GenSettings
    context: PlanContext
    dice: DiceSettings
    dice_seeds: list[int]
    dice_seed: int | None = None
    checker: str | None = None

    @property
    def s(self) -> MergeSettings:
        if self.settings is None:
            raise PlanError("this axis changes merge settings, but the plot runs a whole recipe")
        return self.settings

    def default(self, name: str) -> float:
        """The merge method's own default for `name`: the one a plain merge of these settings uses."""
        spec = get_method(method_for(self.s.mode, self.s.calc))
        if not spec.takes(name):
            raise PlanError(f"mode {spec.name} has no parameter {name}")
        return float(spec.param(name).default)

    def base_vector(self) -> list[float]:
        s = self.s
        spec = s.blocks or s.preset
        alpha = s.alpha if s.alpha is not None else self.default("alpha")
        if not spec:
            return [alpha] * len(self.context.schema)
        parsed = parse_vector(spec, self.context.schema, default=alpha).vector
        return list(parsed.values)


def _join(*parts: str | None, sep: str = ", ") -> str | None:
    kept = [p.strip() for p in parts if p and p.strip()]
    return sep.join(kept) or None


def _set_alpha_beta(d: _Draft, v) -> None:
    d.s.alpha, d.s.beta = v


def _pinpoint_blocks(d: _Draft, slots, partner: str, value) -> None:
    names = d.context.schema.slots
    for which, number in _partner_numbers(partner, value):
        if which == "alpha":
            vector = d.base_vector()
            d.s.blocks, d.s.preset = _vector_text(vector, names, slots, number), None
        else:
            beta = d.s.beta if d.s.beta is not None else d.default("beta")
            vector = (
                list(parse_vector(d.s.beta_blocks, d.context.schema, default=beta).vector.values)
                if d.s.beta_blocks
                else [beta] * len(names)
            )
            d.s.beta_blocks = _vector_text(vector, names, slots, number)


def _partner_numbers(partner: str, value) -> list[tuple[str, float]]:
    if partner == "alpha_beta":
        return [("alpha", value[0]), ("beta", value[1])]
    return [(partner, value)]


def _vector_text(vector: list[float], names: tuple[str, ...], slots, number: float) -> str:
    return ",".join(format_number(number if n in slots else x) for n, x in zip(names, vector, strict=True))


def _filter(mode: str, add: bool):
    def apply(d: _Draft, targets: str) -> None:
        other = "exclude" if mode == "include" else "include"
        current = getattr(d.s, mode) if add else None
        setattr(d.s, mode, _join(current, targets, sep=" "))
        setattr(d.s, other, None)

    return apply


def _pinpoint_element(d: _Draft, item: str, partner: str, alpha: float) -> None:
    d.s.elemental = _join(d.s.elemental, f"{item}:{format_number(alpha)}")


def _checker(d: _Draft, item: str) -> None:
    d.checker = item
    if item:
        d.s.elemental = _join(d.s.elemental, f"{item}:0")


def _pinpoint_adjust(d: _Draft, names: tuple[str, ...], partner: str, alpha: float) -> None:
    numbers = list(parse_adjust(d.s.adjust or "").numbers)
    for name in names:
        numbers[ADJUST_NAMES.index(name)] = alpha
    d.s.adjust = ",".join(format_number(x) for x in numbers)


def _random(d: _Draft, index: int) -> None:
    seed = d.dice_seeds[index]
    result = roll(d.dice, d.context.schema, seed)
    d.dice_seed = seed
    if result.alpha is not None:
        d.s.blocks, d.s.preset = result.blocks_text(result.alpha), None
    if result.beta is not None:
        d.s.beta_blocks = result.blocks_text(result.beta)
    if result.elemental:
        d.s.elemental = _join(d.s.elemental, *result.elemental)
        d.s.seed = seed


def _merge_id(d: _Draft, history_id: int) -> None:
    if d.context.history_recipe is None:
        raise PlanError("merge id axis: no history here")
    d.recipe = d.context.history_recipe(history_id)


def _recipe_file(d: _Draft, name: str) -> None:
    folder = d.context.recipes_dir
    if folder is None:
        raise PlanError(f"recipe axis: no recipe folder here for {name!r}")
    try:
        d.recipe = read_recipe_file(str(file_in_folders(name, [folder])))
    except AlloyError as e:
        raise PlanError(f"recipe axis: {e}") from None


def _gen(name: str):
    def apply(d: _Draft, value) -> None:
        setattr(d.gen, name, value)

    return apply


def _seed(d: _Draft, value: int) -> None:
    if value != -1:
        d.gen.seed = value


def _setting(name: str, *clear: str):
    def apply(d: _Draft, value) -> None:
        setattr(d.s, name, value)
        for other in clear:
            setattr(d.s, other, None)

    return apply


_APPLY: dict[str, Callable] = {
    "alpha": _setting("alpha"),
    "beta": _setting("beta"),
    "alpha_beta": _set_alpha_beta,
    "seed": _seed,
    "mbw_alpha": _setting("blocks", "preset"),
    "mbw_beta": _setting("beta_blocks"),
    "mbw_alpha_beta": lambda d, v: (_setting("blocks", "preset")(d, v[0]), _setting("beta_blocks")(d, v[1])),
    "model_a": _setting("a"),
    "model_b": _setting("b"),
    "model_c": _setting("c"),
    "pinpoint_blocks": _pinpoint_blocks,
    "include": _filter("include", add=False),
    "exclude": _filter("exclude", add=False),
    "add_include": _filter("include", add=True),
    "add_exclude": _filter("exclude", add=True),
    "elemental": lambda d, v: setattr(d.s, "elemental", v or None),
    "add_elemental": lambda d, v: setattr(d.s, "elemental", _join(d.s.elemental, v.replace("\n", ", "))),
    "pinpoint_element": _pinpoint_element,
    "elemental_checker": _checker,
    "adjust": _setting("adjust"),
    "pinpoint_adjust": _pinpoint_adjust,
    "calcmode": _setting("calc"),
    "rebasin": _setting("rebasin"),
    "prompt": _gen("prompt"),
    "prompt_multiline": _gen("prompt"),
    "prompt_batch": _gen("prompt"),
    "random": _random,
    "merge_id": _merge_id,
    "recipe": _recipe_file,
}


def swept_formula(plan: XYZPlan, base: MergeSettings | None) -> str:
    """The corner text: the mode's formula with the swept parameters shown as X / Y."""
    if base is None:
        return "recipe"
    names = {spec.type: axis.upper() for axis, spec in plan.axes() if axis in ("x", "y")}
    alpha = names.get("alpha") or names.get("alpha_beta") or "α"
    beta = names.get("beta") or names.get("alpha_beta") or "β"
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
