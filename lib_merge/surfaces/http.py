"""HTTP routes under /alloy/v1, added to the host's FastAPI app.

Routes carry an HTTP Basic dependency built from the WebUI's own API credentials, because routes
added by extensions are not covered by `--api-auth` (docs/WEBUI.md §7). No middleware is added.
"""

from __future__ import annotations

import secrets
import types
import typing
from dataclasses import fields
from typing import Any

from lib_merge.app.history import read_history, search_history
from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.plots.plan import XYZPlan
from lib_merge.app.requests import LoraBakeRequest, LoraExtractRequest, LoraMergeRequest
from lib_merge.app.workbench import MergeRequest, SaveRequest, Workbench
from lib_merge.errors import AlloyError, BusyError
from lib_merge.recipe.form import MergeSettings, MethodSettings

PREFIX = "/alloy/v1"
_FLAG_FIELDS = {f.name for f in fields(MergeSettings)}
_METHOD_FIELDS = {f.name for f in fields(MethodSettings)}


def parse_credentials(api_auth: str | None) -> dict[str, str]:
    """`user:pass[,user2:pass2]` as the WebUI's --api-auth takes it."""
    found = {}
    for pair in (api_auth or "").split(","):
        if ":" in pair:
            user, password = pair.strip().split(":", 1)
            found[user] = password
    return found


def json_object(body: Any) -> dict:
    """A route's JSON body: an object, or none at all (an empty object); anything else is a 400."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def request_from_body(body: Any) -> MergeRequest:
    body = json_object(body)
    unknown = set(body) - _FLAG_FIELDS - _METHOD_FIELDS - {"recipe", "wait", "save"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    _check_types(body, MethodSettings if body.get("method") else MergeSettings)
    wait = bool(body.get("wait", True))
    save = SaveRequest(**body["save"]) if isinstance(body.get("save"), dict) else None
    if body.get("recipe"):
        return MergeRequest(recipe=str(body["recipe"]), wait=wait, save=save)
    if body.get("method"):  # a modern method: "a" is the base, "models" the others
        if not body.get("a") or not isinstance(body.get("models"), list) or not body["models"]:
            raise ValueError("a method needs 'a' (the base) and 'models' (a list)")
        given = {k: body[k] for k in _METHOD_FIELDS if k in body and body[k] is not None}
        return MergeRequest(settings=MethodSettings(**given), wait=wait, save=save)
    if not body.get("a") or not body.get("b"):
        raise ValueError("give 'recipe', or at least 'a' and 'b'")
    flags = {k: body[k] for k in _FLAG_FIELDS if k in body and body[k] is not None}
    flags.setdefault("mode", "weighted_sum")
    return MergeRequest(settings=MergeSettings(**flags), wait=wait, save=save)


def _check_types(body: dict, cls: type) -> None:
    """Form fields of the wrong JSON type are a 400 (a string "false" must not turn re-basin on)."""
    hints = typing.get_type_hints(cls)
    for name, value in body.items():
        if name not in hints or value is None or _fits_type(value, hints[name]):
            continue
        if _fits_type(value, float) and _fits_type(1, hints[name]):
            continue  # a number for a whole-number field: the form says "must be a whole number, not 1.5"
        raise ValueError(f"{name!r} must be {hints[name]}, not {json_type(value)}")


def _fits_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a simple annotation (str, int, float, bool, list[str], X | None)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits_type(v, item) for v in value)
    return isinstance(value, hint)


def typed_request(cls: type, body: Any) -> Any:
    """A request dataclass from a JSON object whose fields are its own and of its types (else a 400)."""
    given = json_object(body)
    hints = typing.get_type_hints(cls)
    unknown = set(given) - set(hints)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    for name, value in given.items():
        if not _fits_type(value, hints[name]):
            raise ValueError(f"{name!r} must be {hints[name]}, not {json_type(value)}")
    return cls(**given)


def json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


class Api:
    """What each route does, without FastAPI: a decoded JSON body (or query) in, a JSON-ready dict out."""

    def __init__(self, workbench: Workbench, desk: PlotDesk):
        self.workbench = workbench
        self.desk = desk

    def merge(self, body: Any) -> dict:
        return self.merge_answer(self.workbench.merge(request_from_body(body)))

    @staticmethod
    def merge_answer(outcome) -> dict:
        return {
            "name": outcome.name,
            "hash": outcome.recipe_hash,
            "history_id": outcome.history_id,
            "seconds": round(outcome.seconds, 3),
            "path": outcome.path,
            "message": outcome.message,
        }

    def restore(self, body: Any) -> dict:
        return {"message": self.workbench.restore()}

    def save(self, body: Any) -> dict:
        given = json_object(body)
        request = SaveRequest(
            name=str(given.get("name") or ""),
            dtype=str(given.get("dtype") or self.workbench.host.config().save_dtype),
            format=str(given.get("format") or "safetensors"),
            prune=bool(given.get("prune", True)),
            overwrite=bool(given.get("overwrite", False)),
        )
        return {"path": self.workbench.save_current(request)}

    def history(self, q: str = "", any_word: bool = False, limit: int = 0) -> dict:
        log = read_history(self.workbench.history_path())
        rows = search_history(log.rows, q, any_word) if q else log.rows
        if limit > 0:
            rows = rows[-limit:]
        return {"rows": [_row(r) for r in rows], "skipped": log.skipped}

    def xyz(self, body: Any) -> dict:
        return run_xyz_body(self.desk, json_object(body))

    def xyz_reserve(self, body: Any) -> dict:
        ids = self.desk.reserve(XYZPlan.from_dict(json_object(body)))
        return {"id": ids[0], "ids": ids}

    def xyz_queue(self, body: Any) -> dict:
        rows = [
            {"id": r.id, "status": r.status, "summary": r.label, "created": r.created, "message": r.message}
            for r in self.desk.rows()
        ]
        return {"rows": rows, "running": self.desk.queue_running()}

    def xyz_queue_start(self, body: Any) -> dict:
        started = self.desk.start_queue()
        return {"started": started, "message": "started" if started else "the queue is already running"}

    def lora_bake(self, body: Any) -> dict:
        given = json_object(body)
        loras = given.get("loras")
        if not isinstance(loras, list) or not all(isinstance(x, str) for x in loras):
            raise ValueError('"loras" must be a list of "name:strength[:blocks]" strings')
        save = (
            SaveRequest(name=str(given["save"]), dtype=self.workbench.host.config().save_dtype)
            if given.get("save")
            else None
        )
        request = LoraBakeRequest(loras, model=given.get("model"), save=save, wait=bool(given.get("wait", True)))
        return self.merge_answer(self.workbench.bake_loras(request))

    def lora_merge(self, body: Any) -> dict:
        outcome = self.workbench.merge_loras(typed_request(LoraMergeRequest, body))
        return {"path": outcome.path, "message": outcome.message}

    def lora_extract(self, body: Any) -> dict:
        outcome = self.workbench.extract_lora(typed_request(LoraExtractRequest, body))
        return {"path": outcome.path, "message": outcome.message}

    def analyze(self, body: Any) -> dict:
        """The per-block similarity of two checkpoints (titles or files the host knows)."""
        from lib_merge.analysis.report import block_rows
        from lib_merge.analysis.similarity import compare

        given = json_object(body)
        unknown = set(given) - {"a", "b", "attention"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        if not isinstance(given.get("a"), str) or not isinstance(given.get("b"), str):
            raise ValueError('"a" and "b" must be checkpoint names')
        host = self.workbench.host
        result = compare(host.resolve_checkpoint(given["a"]), host.resolve_checkpoint(given["b"]),
                         bool(given.get("attention", False)))  # fmt: skip
        columns = ["block", "keys", "cosine_mean", "cosine_min", "cosine_weighted", "attention"]
        return {"a": result.a, "b": result.b, "architecture": result.architecture,
                "blocks": [dict(zip(columns, row, strict=True)) for row in block_rows(result)]}  # fmt: skip

    def stop(self, body: Any) -> dict:
        stopped = self.desk.stop()
        return {"stopped": stopped, "message": f"stopping the {' and the '.join(stopped)}" if stopped else "idle"}

    def status(self, body: Any) -> dict:
        live = self.workbench.live
        return {
            "merged": live is not None,
            "name": live.name if live else None,
            "hash": live.recipe_hash if live else None,
            "history_id": live.history_id if live else None,
            "progress": self.workbench.progress.text(),
        }


# (HTTP method, path under PREFIX, Api method); GET /history takes query parameters instead of a body.
ROUTES = (
    ("POST", "/merge", "merge"),
    ("POST", "/restore", "restore"),
    ("POST", "/save", "save"),
    ("POST", "/xyz", "xyz"),
    ("POST", "/xyz/reserve", "xyz_reserve"),
    ("GET", "/xyz/queue", "xyz_queue"),
    ("POST", "/xyz/queue/start", "xyz_queue_start"),
    ("POST", "/stop", "stop"),
    ("POST", "/lora/bake", "lora_bake"),
    ("POST", "/lora/merge", "lora_merge"),
    ("POST", "/lora/extract", "lora_extract"),
    ("POST", "/analyze", "analyze"),
    ("GET", "/status", "status"),
)


def add_routes(
    app, workbench: Workbench, credentials: dict[str, str] | None = None, desk: PlotDesk | None = None
) -> None:
    """Every route under /alloy/v1, behind HTTP Basic when `credentials` are given; plots, the queue and
    stop go through `desk` (shared with the XYZ tab when the caller has one)."""
    from fastapi import Body

    api = Api(workbench, desk or PlotDesk(workbench))
    dependencies = _basic_auth(credentials) if credentials else []

    def endpoint(method: str, work):
        if method == "GET":
            return lambda: _answer(lambda: work(None))

        def with_body(body: Any = Body(default=None)):  # noqa: B008
            return _answer(lambda: work(body))

        return with_body

    for method, path, name in ROUTES:
        app.add_api_route(
            PREFIX + path, endpoint(method, getattr(api, name)), methods=[method], dependencies=dependencies
        )

    def history(q: str = "", any_word: bool = False, limit: int = 0):
        return _answer(lambda: api.history(q, any_word, limit))

    app.add_api_route(f"{PREFIX}/history", history, methods=["GET"], dependencies=dependencies)


def _basic_auth(credentials: dict[str, str]) -> list:
    """The dependency the WebUI's own API routes get from --api-auth, rebuilt for ours."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic

    basic = HTTPBasic()

    def check(given=Depends(basic)) -> None:  # noqa: B008
        expected = credentials.get(given.username)
        if expected is None or not secrets.compare_digest(given.password, expected):
            raise HTTPException(401, "Incorrect username or password", {"WWW-Authenticate": "Basic"})

    return [Depends(check)]


def _answer(work):
    """The route's answer: its dict, or {"error": …} with 409 (busy) or 400 (anything the user can fix)."""
    from fastapi.responses import JSONResponse

    try:
        return work()
    except BusyError as e:
        return JSONResponse({"error": str(e)}, status_code=409)
    except (AlloyError, ValueError, TypeError) as e:
        return JSONResponse({"error": str(e)}, status_code=400)


def _row(r) -> dict:
    return {
        "id": r.id,
        "time": r.time,
        "name": r.name,
        "hash": r.recipe_hash,
        "models": r.models,
        "settings": r.settings,
        "output": r.output,
        "recipe": r.recipe,
    }


def run_xyz_body(desk: PlotDesk, body: dict) -> dict:
    """A plan as JSON → every split part run → the grids as base64 PNG and each cell's merge."""
    import base64
    import io

    grids, cells, paths, merges = [], [], [], 0
    for out in desk.run_all(XYZPlan.from_dict(body)):
        merges += out.merges
        paths += out.grid_paths
        for image in out.grids:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            grids.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
        for r in out.results:
            cells.append(
                {
                    "x": r.cell.x,
                    "y": r.cell.y,
                    "z": r.cell.z,
                    "labels": [label for label in r.cell.labels if label],
                    "status": r.status,
                    "name": r.merge.name if r.merge else None,
                    "hash": r.merge.recipe_hash if r.merge else None,
                    "history_id": r.merge.history_id if r.merge else None,
                    "seed": r.cell.gen.seed,
                    "dice_seed": r.cell.dice_seed,
                }
            )
    return {"grid": grids[0] if grids else None, "grids": grids, "paths": paths, "cells": cells, "merges": merges}
