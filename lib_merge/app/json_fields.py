"""JSON objects checked against the dataclass they fill: every field known and of its type, before any work.

The HTTP routes, XYZ plans (posted, queued or preset) and every other JSON a person or a client writes go
through here, so a wrong field is one plain line naming it, never Python's own words later on.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from lib_merge.errors import ParameterError


def json_type(value: Any) -> str:
    """A JSON value's type as a person reads it."""
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


def type_name(hint: Any) -> str:
    """A field's type as a person reads it: "a string", "a whole number or null"."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    if typing.get_origin(hint) is dict:
        return "an object"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            type(None): "null", dict: "an object"}.get(hint, getattr(hint, "__name__", str(hint)))  # fmt: skip


def fits_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a simple annotation (str, int, float, bool, list[X], dict, tuple, X | None).
    A whole number written as 3.0 fits an int field; a boolean is never a number."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(fits_type(value, arg) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(fits_type(v, item) for v in value)
    if origin is tuple or hint is tuple:
        return isinstance(value, list)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(hint, type) and isinstance(value, hint)


def checked_fields(cls: type, value: Any, where: str = "the body", loose: tuple[str, ...] = ()) -> dict:
    """`value` as keyword arguments of the dataclass `cls`: a JSON object (or null: no fields) whose fields
    are `cls`'s and of their types. `loose` names fields whose type the dataclass checks itself."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParameterError(f"{where} must be a JSON object, not {json_type(value)}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(value) - set(hints))
    if unknown:
        inside = "" if where == "the body" else f" in {where}"
        raise ParameterError(f"unknown fields{inside}: {', '.join(map(str, unknown))}; known: {', '.join(hints)}")
    for name, item in value.items():
        if name in loose or fits_type(item, hints[name]):
            continue
        if isinstance(item, float) and fits_type(1, hints[name]):
            raise ParameterError(f"{name} must be a whole number, not {item!r}")
        raise ParameterError(f"{name!r} must be {type_name(hints[name])}, not {json_type(item)}")
    return {name: int(item) if hints[name] in (int, int | None) and isinstance(item, float) else item
            for name, item in value.items()}  # fmt: skip
