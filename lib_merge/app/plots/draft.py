"""What an XYZ axis value does to one cell: a draft of the cell's merge settings (or recipe) and its
generation settings, changed by each axis in turn before the cell's recipe is built and checked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib_merge.app.dice import DiceSettings, roll
from lib_merge.app.ports import GenSettings
from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import AlloyError, PlanError
from lib_merge.methods import get_method
from lib_merge.methods.adjust import NAMES as ADJUST_NAMES
from lib_merge.methods.adjust import parse_adjust
from lib_merge.paths import file_in_folders
from lib_merge.recipe import parse_vector, read_recipe_file
from lib_merge.recipe.form import MergeSettings, MethodSettings, method_for
from lib_merge.recipe.vectors import format_number


@dataclass
class PlanContext:
    """What the planner needs from outside: the block schema of model A, history and recipe files."""

    schema: BlockSchema
    history_recipe: Callable[[int], str] | None = None  # history id (-1: last) -> recipe text
    recipes_dir: Path | None = None


@dataclass
class Draft:
    settings: MergeSettings | MethodSettings | None
    recipe: str | None
    gen: GenSettings
    context: PlanContext
    dice: DiceSettings
    dice_seeds: list[int]
    dice_seed: int | None = None
    checker: str | None = None

    @property
    def form(self) -> MergeSettings | MethodSettings:
        if self.settings is None:
            raise PlanError("this axis changes merge settings, but the plot runs a whole recipe")
        return self.settings

    @property
    def s(self) -> MergeSettings:
        """The mode settings; a plot of a modern method sweeps its parameters with param:NAME axes."""
        form = self.form
        if isinstance(form, MethodSettings):
            raise PlanError(f"this axis changes the mode settings; the plot merges with {form.method}: use param:NAME")
        return form

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


def join(*parts: str | None, sep: str = ", ") -> str | None:
    kept = [p.strip() for p in parts if p and p.strip()]
    return sep.join(kept) or None


def set_alpha_beta(d: Draft, v) -> None:
    d.s.alpha, d.s.beta = v


def pinpoint_blocks(d: Draft, slots, partner: str, value) -> None:
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


def key_filter(mode: str, add: bool = False):
    def apply(d: Draft, targets: str) -> None:
        other = "exclude" if mode == "include" else "include"
        current = getattr(d.s, mode) if add else None
        setattr(d.s, mode, join(current, targets, sep=" "))
        setattr(d.s, other, None)

    return apply


def pinpoint_element(d: Draft, item: str, partner: str, alpha: float) -> None:
    d.s.elemental = join(d.s.elemental, f"{item}:{format_number(alpha)}")


def checker(d: Draft, item: str) -> None:
    d.checker = item
    if item:
        d.s.elemental = join(d.s.elemental, f"{item}:0")


def pinpoint_adjust(d: Draft, names: tuple[str, ...], partner: str, alpha: float) -> None:
    numbers = list(parse_adjust(d.s.adjust or "").numbers)
    for name in names:
        numbers[ADJUST_NAMES.index(name)] = alpha
    d.s.adjust = ",".join(format_number(x) for x in numbers)


def random(d: Draft, index: int) -> None:
    seed = d.dice_seeds[index]
    result = roll(d.dice, d.context.schema, seed)
    d.dice_seed = seed
    if result.alpha is not None:
        d.s.blocks, d.s.preset = result.blocks_text(result.alpha), None
    if result.beta is not None:
        d.s.beta_blocks = result.blocks_text(result.beta)
    if result.elemental:
        d.s.elemental = join(d.s.elemental, *result.elemental)
        d.s.seed = seed


def merge_id(d: Draft, history_id: int) -> None:
    if d.context.history_recipe is None:
        raise PlanError("merge id axis: no history here")
    d.recipe = d.context.history_recipe(history_id)


def recipe_file(d: Draft, name: str) -> None:
    folder = d.context.recipes_dir
    if folder is None:
        raise PlanError(f"recipe axis: no recipe folder here for {name!r}")
    try:
        d.recipe = read_recipe_file(str(file_in_folders(name, [folder])))
    except AlloyError as e:
        raise PlanError(f"recipe axis: {e}") from None


def gen(name: str):
    def apply(d: Draft, value) -> None:
        setattr(d.gen, name, value)

    return apply


def seed(d: Draft, value: int) -> None:
    if value != -1:
        d.gen.seed = value


def setting(name: str, *clear: str):
    """Set a field of the form (either form where both have it: model A, re-basin)."""

    def apply(d: Draft, value) -> None:
        form = d.form if hasattr(d.form, name) else d.s
        setattr(form, name, value)
        for other in clear:
            setattr(form, other, None)

    return apply


def mbw_alpha_beta(d: Draft, value) -> None:
    setting("blocks", "preset")(d, value[0])
    setting("beta_blocks")(d, value[1])


def elemental(d: Draft, value: str) -> None:
    d.s.elemental = value or None


def add_elemental(d: Draft, value: str) -> None:
    d.s.elemental = join(d.s.elemental, value.replace("\n", ", "))


def param(name: str):
    """A declared parameter: of the method, or a field of the mode settings the mode's method takes."""

    def apply(d: Draft, value: Any) -> None:
        form = d.form
        if isinstance(form, MethodSettings):
            form.params[name] = value
            return
        spec = get_method(method_for(form.mode, form.calc))
        if not spec.takes(name):
            raise PlanError(f"{spec.name} has no parameter {name!r}")
        if name not in MergeSettings.__dataclass_fields__:
            raise PlanError(f"{spec.name}'s {name} is set by its calc mode, not swept")
        setattr(form, name, value)

    return apply
