"""A merge form from JSON: the mode settings of the Merge tab, or a method's form with its parameters.

The HTTP merge route and an XYZ plan's `merge` read the same fields through here, so a plan can sweep
anything the route can merge.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from lib_merge.app.json_fields import checked_fields, json_type
from lib_merge.errors import ParameterError
from lib_merge.recipe.form import MergeSettings, MethodSettings

MODE_FIELDS = frozenset(f.name for f in fields(MergeSettings))
METHOD_FIELDS = frozenset(f.name for f in fields(MethodSettings))


def checked_form_fields(data: Any, where: str = "the body") -> dict:
    """The form's fields checked by name and type, as given (models may still come from elsewhere).
    With `"method"`, the method's parameters go under `"params"`; beside the other fields (as older
    clients and history rows wrote them) they are moved there."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"{where} must be a JSON object, not {json_type(data)}")
    if data.get("method") is None:
        return {k: v for k, v in checked_fields(MergeSettings, data, where).items() if v is not None}
    if not isinstance(data["method"], str):
        raise ParameterError(f"'method' must be a string, not {json_type(data['method'])}")
    given = checked_fields(MethodSettings, MethodSettings.gather_params(data), where)
    return {k: v for k, v in given.items() if v is not None}


def form_from_fields(given: dict) -> MergeSettings | MethodSettings:
    """A form from checked fields: a method's needs A and further models, the mode settings A and B."""
    if given.get("method") is not None:
        if not given.get("a") or not given.get("models"):
            raise ParameterError("a method needs model A ('a', the base) and further models ('models', a list)")
        return MethodSettings(**given)
    if not given.get("a") or not given.get("b"):
        raise ParameterError("give 'recipe', or at least 'a' and 'b' (models A and B)")
    return MergeSettings(**{"mode": "weighted_sum", **given})


def form_from_json(data: Any, where: str = "the body") -> MergeSettings | MethodSettings:
    return form_from_fields(checked_form_fields(data, where))
