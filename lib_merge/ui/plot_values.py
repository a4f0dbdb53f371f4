"""XYZ and Dice widget values → an XYZPlan (no gradio here, like values.py)."""

from __future__ import annotations

from dataclasses import asdict

from lib_merge.app.dice import DiceSettings
from lib_merge.app.plots.axes import AXIS_TYPES, PARAM_PREFIX, param_names
from lib_merge.app.plots.plan import AxisSpec, PlanOptions, XYZPlan
from lib_merge.app.ports import GenSettings
from lib_merge.ui.values import merge_request

NO_AXIS = "none"
AXIS_CHOICES = [NO_AXIS] + list(AXIS_TYPES) + [PARAM_PREFIX + name for name in param_names()]
XYZ_FIELDS = ("x_type", "x_values", "y_type", "y_values", "z_type", "z_values")
OPTION_FIELDS = ("swap_xy", "restore_after", "individual", "no_grid", "save_csv", "save_models", "checker_gif")
DICE_FIELDS = (
    "dice_mode", "dice_custom", "dice_target", "dice_upper", "dice_lower", "dice_clamp_max", "dice_clamp_min",
    "dice_round", "dice_seed", "dice_rolls", "dice_extended",
)  # fmt: skip
_JSON_GEN = ("prompt", "negative_prompt", "steps", "sampler", "scheduler", "cfg_scale", "seed", "width", "height",
             "batch_size", "n_iter", "enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
             "denoising_strength", "styles")  # fmt: skip


def dice_settings(v: dict) -> DiceSettings:
    seed = str(v.get("dice_seed") if v.get("dice_seed") is not None else -1).strip() or "-1"
    return DiceSettings(
        mode=str(v.get("dice_mode") or "R"),
        custom=str(v.get("dice_custom") or DiceSettings().custom),
        target=str(v.get("dice_target") or "alpha"),
        upper=str(v.get("dice_upper") or ""),
        lower=str(v.get("dice_lower") or ""),
        clamp_max=str(v.get("dice_clamp_max") or ""),
        clamp_min=str(v.get("dice_clamp_min") or ""),
        round=int(v.get("dice_round") if v.get("dice_round") is not None else 3),
        seed=int(float(seed)),
        rolls=int(v.get("dice_rolls") or 1),
        extended=bool(v.get("dice_extended")),
    )


def gen_dict(gen: GenSettings) -> dict:
    """The JSON-safe part of generation settings (what a queued plot keeps)."""
    data = asdict(gen)
    return {k: data[k] for k in _JSON_GEN if data.get(k) not in (None, "")}


def plan_from_ui(form_values: dict, xyz: dict, dice: dict, gen: GenSettings) -> XYZPlan:
    """The current plot: the Merge tab's settings (or its recipe), the axes, options, Dice and generation."""
    request = merge_request(form_values)
    axes = {}
    for name in ("x", "y", "z"):
        kind = xyz.get(f"{name}_type") or NO_AXIS
        axes[name] = None if kind == NO_AXIS else AxisSpec(str(kind), str(xyz.get(f"{name}_values") or ""))
    if axes["x"] is None:
        from lib_merge.errors import PlanError

        raise PlanError("choose an X axis type")
    options = PlanOptions(**{k: bool(xyz.get(k)) for k in OPTION_FIELDS})
    return XYZPlan(
        axes["x"],
        axes["y"],
        axes["z"],
        merge=request.settings.as_dict() if request.settings else {},
        recipe=None if request.settings else request.recipe,
        gen=gen_dict(gen),
        dice=dice_settings(dice).as_dict(),
        options=options,
    )
