"""The Optimize tab's values <-> a study request (no gradio here, like values.py): the space table, seeds and
prompts as text, the Merge tab's settings turned into a template with chosen inputs opened."""

from __future__ import annotations

import re

from lib_merge.app.optimize.request import StudyGen, StudyRequest
from lib_merge.errors import ParameterError
from lib_merge.recipe import parse_recipe, print_recipe
from lib_merge.recipe.form import compile_form
from lib_merge.recipe.nodes import MergeNode, Param, open_params

SPACE_COLUMNS = ["input", "low", "high", "step", "log", "choices", "blocks"]
# blocks: "knots 5", or groups as "IN00 IN01 | M00 | OUT00-OUT11" (a range of slots in one group)


def _cell(value) -> str:
    return "" if value is None else str(value).strip()


def space_from_rows(rows: list[list]) -> dict:
    """The space table as the study's JSON space; one line naming the row for a bad cell."""
    space: dict = {}
    for row in rows or []:
        cells = [_cell(c) for c in list(row) + [""] * (len(SPACE_COLUMNS) - len(row))]
        name, low, high, step, log, choices, blocks = cells[: len(SPACE_COLUMNS)]
        if not name:
            continue
        if choices:
            space[name] = {"choices": [_number_or_word(c.strip()) for c in choices.split(",") if c.strip()]}
        elif blocks:
            space[name] = _blocks(name, blocks, low, high)
        else:
            space[name] = {"low": _number(name, "low", low or "0"), "high": _number(name, "high", high or "1")}
            if step:
                space[name]["step"] = _number(name, "step", step)
            if log.lower() in ("true", "yes", "1", "log"):
                space[name]["log"] = True
    return space


def _blocks(name: str, text: str, low: str, high: str) -> dict:
    spec: dict = {"blocks": True, "low": _number(name, "low", low or "0"), "high": _number(name, "high", high or "1")}
    knots = re.fullmatch(r"knots\s+(\d+)", text.strip())
    if knots:
        spec["knots"] = int(knots.group(1))
    else:
        spec["groups"] = [group.split() for group in text.split("|") if group.split()]
    return spec


def _number(name: str, column: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ParameterError(f"space row {name}: {column} must be a number, not {text!r}") from None


def _number_or_word(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def rows_from_template(text: str, rows: list[list]) -> list[list]:
    """The table with a row for every open input of the template (kept rows stay as they are)."""
    names = open_params(parse_recipe(text))
    kept = {_cell(r[0]): list(r) for r in rows or [] if r and _cell(r[0]) in names}
    return [kept.get(name, [name, 0, 1, "", "", "", ""]) for name in names]


def seeds(text: str, what: str) -> list[int]:
    found = []
    for item in re.split(r"[,\s]+", text or ""):
        if item:
            if not item.isdigit():
                raise ParameterError(f"{what}: {item!r} is not a whole number")
            found.append(int(item))
    return found


def template_from_settings(settings, open_names: list[str]) -> str:
    """The Merge tab's settings as a recipe whose chosen numeric inputs of the outer merge are param()s."""
    root = compile_form(settings)
    if not isinstance(root, MergeNode):
        raise ParameterError("the Merge tab's settings give no merge to search")
    unknown = [n for n in open_names if n not in root.params]
    if unknown:
        raise ParameterError(f"the merge has no input {', '.join(unknown)}; its inputs: {', '.join(root.params)}")
    params = {k: (Param(k) if k in open_names else v) for k, v in root.params.items()}
    return print_recipe(MergeNode(root.method, root.inputs, params))


def study_request(v: dict) -> StudyRequest:
    """The tab's values as a request (the desk checks it whole before the study starts)."""
    gen = StudyGen(
        prompt=[line for line in (v.get("prompts") or "").splitlines() if line.strip()],
        negative_prompt=v.get("negative_prompt") or None,
        seeds=seeds(v.get("seeds"), "seeds"),
        holdout_seeds=seeds(v.get("holdout_seeds"), "held-out seeds"),
        steps=int(v["steps"]) if v.get("steps") else None,
        width=int(v["width"]) if v.get("width") else None,
        height=int(v["height"]) if v.get("height") else None,
        sampler_name=v.get("sampler_name") or None,
        cfg_scale=float(v["cfg_scale"]) if v.get("cfg_scale") else None,
    )
    scorers = [v["scorer"]] if isinstance(v.get("scorer"), str) else (v.get("scorer") or ["aesthetic"])
    return StudyRequest(
        study=(v.get("study") or "").strip(),
        recipe=v.get("recipe") or "",
        space=space_from_rows(v.get("space") or []),
        trials=int(v.get("trials") or 0),
        sampler=v.get("sampler") or "tpe",
        seed=int(v.get("seed") or 0),
        scorer=scorers[0] if len(scorers) == 1 else list(scorers),  # several: a Pareto front
        gen=gen,
        storage=(v.get("storage") or "").strip(),
        restore_after=bool(v.get("restore_after", True)),
    )
