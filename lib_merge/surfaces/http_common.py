"""What every HTTP route shares: the JSON body read and checked, and the one-line answers (400, 409)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from lib_merge.app.json_fields import checked_fields, json_type
from lib_merge.errors import AlloyError, BusyError, message_for

log = logging.getLogger("alloy")


def json_object(body: Any) -> dict:
    """A route's JSON body: an object, or none at all (an empty object); anything else is a 400."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def typed_request(cls: type, body: Any) -> Any:
    """A request dataclass from a JSON object whose fields are its own and of its types (else a 400)."""
    return cls(**checked_fields(cls, body))


def flag(body: dict, name: str, default: bool) -> bool:
    """A true/false field: JSON's true or false (a string "false" must not mean yes)."""
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{name!r} must be true or false, not {json_type(value)}")
    return value


def decode_json(raw: bytes) -> Any:
    """A request body as JSON (an empty body is no body). A number no double holds (1e999, NaN) is refused
    by the name of its field."""
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ValueError("the body is not valid JSON: nested too deep") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the body is not valid JSON: {e}") from None
    where = _non_finite(body, "")
    if where is not None:
        raise ValueError(f"{where or 'the body'} is not a finite number")
    return body


def _non_finite(value: Any, path: str) -> str | None:
    """The path of the first number in `value` that is not finite, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key)
        if found is not None:
            return found
    return None


def answer(work):
    """The route's answer: its dict, or {"error": one line} with 409 (busy) or 400. Every value is checked
    before any work, so the last clause only keeps a defect of ours from reaching a client as a 500."""
    from fastapi.responses import JSONResponse

    try:
        return work()
    except BusyError as e:
        return JSONResponse({"error": message_for(e, "http")}, status_code=409)
    except (AlloyError, ValueError) as e:
        return JSONResponse({"error": one_line(message_for(e, "http"))}, status_code=400)
    except Exception as e:  # noqa: BLE001 - a defect: logged with its traceback, answered in one line
        log.exception("Alloy: unexpected error in an HTTP route")
        return JSONResponse({"error": one_line(f"unexpected {type(e).__name__}: {e}")}, status_code=400)


def one_line(text: str) -> str:
    return " ".join(text.split())[:2000]
