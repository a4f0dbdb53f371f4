"""HTTP routes under /alloy/v1, added to the host's FastAPI app.

Routes carry an HTTP Basic dependency built from the WebUI's own API credentials, because routes
added by extensions are not covered by `--api-auth` (docs/WEBUI.md §7). No middleware is added.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from typing import Any

from lib_merge.app.forms import METHOD_FIELDS, MODE_FIELDS, form_from_json
from lib_merge.app.history import read_history, search_history
from lib_merge.app.json_fields import checked_fields, json_type
from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.plots.plan import XYZPlan
from lib_merge.app.requests import LoraBakeRequest, LoraExtractRequest, LoraMergeRequest
from lib_merge.app.workbench import MergeRequest, SaveRequest, Workbench
from lib_merge.io.source import file_arch
from lib_merge.surfaces.http_common import answer, decode_json, flag, json_object, typed_request
from lib_merge.surfaces.http_optimize import add_optimize_routes

PREFIX = "/alloy/v1"
log = logging.getLogger("alloy")


def parse_credentials(api_auth: str | None) -> dict[str, str]:
    """`user:pass[,user2:pass2]` as the WebUI's --api-auth takes it."""
    found = {}
    for pair in (api_auth or "").split(","):
        if ":" in pair:
            user, password = pair.strip().split(":", 1)
            found[user] = password
    return found


def request_from_body(body: Any) -> MergeRequest:
    """/alloy/v1/merge's body: a recipe, a method's form (`"method"`, `"models"`, `"params"`) or the
    Merge tab's mode settings; an XYZ plan's `merge` is read by the same function."""
    body = json_object(body)
    wait = flag(body, "wait", True)
    log = flag(body, "log", True)  # false: no history row (a remote study logs its trials where it runs)
    if body.get("save") is not None and not isinstance(body["save"], dict):
        raise ValueError(f'"save" must be an object, not {json_type(body["save"])}')
    save = SaveRequest(**checked_fields(SaveRequest, body["save"], '"save"')) if body.get("save") else None
    form_body = {k: v for k, v in body.items() if k not in ("recipe", "wait", "save", "log")}
    if body.get("recipe") is not None:
        if not isinstance(body["recipe"], str):
            raise ValueError(f"'recipe' must be a string, not {json_type(body['recipe'])}")
        unknown = set(form_body) - MODE_FIELDS - METHOD_FIELDS
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        return MergeRequest(recipe=body["recipe"], wait=wait, save=save, log=log)
    return MergeRequest(settings=form_from_json(form_body), wait=wait, save=save, log=log)


class Api:
    """What each route does, without FastAPI: a decoded JSON body (or query) in, a JSON-ready dict out."""

    def __init__(self, workbench: Workbench, desk: PlotDesk):
        self.workbench = workbench
        self.desk = desk

    def merge(self, body: Any) -> dict:
        return self.mergeanswer(self.workbench.merge(request_from_body(body)))

    @staticmethod
    def mergeanswer(outcome) -> dict:
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
        given = {k: v for k, v in json_object(body).items() if v is not None}
        given.setdefault("dtype", self.workbench.host.config().save_dtype)
        return {"path": self.workbench.save_current(typed_request(SaveRequest, given))}

    def history(self, q: str = "", any_word: str = "false", limit: str = "0") -> dict:
        """Query parameters arrive as text and are read here, so a wrong one is a 400 like the rest."""
        if any_word.lower() not in ("true", "false", "1", "0", ""):
            raise ValueError(f"any_word must be true or false, not {any_word[:40]!r}")
        any_word = any_word.lower() in ("true", "1")
        if not limit.strip().isdigit():
            raise ValueError(f"limit must be a whole number, not {limit[:40]!r}")
        limit = int(limit)
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
        unknown = set(given) - {"loras", "model", "save", "wait"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        if not isinstance(loras, list) or not all(isinstance(x, str) for x in loras):
            raise ValueError('"loras" must be a list of "name:strength[:blocks]" strings')
        for name in ("model", "save"):
            if given.get(name) is not None and not isinstance(given[name], str):
                raise ValueError(f"{name!r} must be a string, not {json_type(given[name])}")
        dtype = self.workbench.host.config().save_dtype
        save = SaveRequest(name=given["save"], dtype=dtype) if given.get("save") else None
        request = LoraBakeRequest(loras, model=given.get("model"), save=save, wait=flag(given, "wait", True))
        return self.mergeanswer(self.workbench.bake_loras(request))

    def lora_merge(self, body: Any) -> dict:
        outcome = self.workbench.merge_loras(typed_request(LoraMergeRequest, body))
        return {"path": outcome.path, "message": outcome.message}

    def lora_extract(self, body: Any) -> dict:
        outcome = self.workbench.extract_lora(typed_request(LoraExtractRequest, body))
        return {"path": outcome.path, "message": outcome.message}

    def analyze(self, body: Any) -> dict:
        """The per-block similarity of two checkpoints (titles or files the host knows): the Analysis tab's
        job, with its progress and Stop, and the files it saves (CSV, heatmap, chart)."""
        from lib_merge.app.toolkit import analysis_json, analyze

        given = json_object(body)
        unknown = set(given) - {"a", "b", "attention"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        if not isinstance(given.get("a"), str) or not isinstance(given.get("b"), str):
            raise ValueError('"a" and "b" must be checkpoint names')
        attention = flag(given, "attention", False)
        host = self.workbench.host
        job = lambda step: analyze(given["a"], given["b"], attention, host, step)  # noqa: E731
        return analysis_json(self.workbench.file_job("analysis", job))

    def explain(self, body: Any) -> dict:
        """The block weights that best explain checkpoint M as a merge of A and B (and C): a file job."""
        from lib_merge.app.explain import ExplainRequest, as_json, explain_checkpoints

        request = typed_request(ExplainRequest, body)
        host = self.workbench.host
        return as_json(self.workbench.file_job("explain", lambda step: explain_checkpoints(request, host, step)))

    def stop(self, body: Any) -> dict:
        stopped = self.desk.stop()
        return {"stopped": stopped, "message": f"stopping the {' and the '.join(stopped)}" if stopped else "idle"}

    def checkpoint(self, title: str) -> dict:
        """A checkpoint by the title the host shows: its file and architecture, read from its header (a
        remote study's driver learns the block schema of model A this way)."""
        if not title.strip():
            raise ValueError("give the checkpoint's title: ?title=…")
        path = self.workbench.host.resolve_checkpoint(title)
        return {"title": title, "file": os.path.basename(path), "arch": file_arch(path)}

    def gen_defaults(self) -> dict:
        """What this WebUI's generations start from (its last txt2img run, or its defaults): a driver of
        several WebUIs gives every one the same settings, so their images match one WebUI's."""
        generation = self.workbench.host.generation
        if generation is None:
            raise ValueError("this host does not generate images")
        settings = generation.base_settings()
        return {k: v for k, v in settings.__dict__.items() if k not in ("script_args", "save_images")}

    def font(self) -> dict:
        """The font of this WebUI's grid labels (base64), so a plot assembled elsewhere looks the same."""
        path = self.workbench.host.font_path()
        if not path:
            return {"name": None, "data": None}
        with open(path, "rb") as f:
            return {"name": os.path.basename(path), "data": base64.b64encode(f.read()).decode("ascii")}

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
    ("POST", "/explain", "explain"),
    ("GET", "/status", "status"),
)


def add_routes(
    app,
    workbench: Workbench,
    credentials: dict[str, str] | None = None,
    desk: PlotDesk | None = None,
    studies: OptimizeDesk | None = None,
) -> None:
    """Every route under /alloy/v1, behind HTTP Basic when `credentials` are given; plots, the queue and
    stop go through `desk`, studies through `studies` (each shared with its tab when the caller has one)."""

    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    api = Api(workbench, desk or PlotDesk(workbench))
    dependencies = _basic_auth(credentials) if credentials else []

    def endpoint(method: str, work):
        if method == "GET":
            return lambda: answer(lambda: work(None))

        async def with_body(request):  # the body is read here, so bad JSON is a 400 like the rest
            raw = await request.body()
            return await run_in_threadpool(answer, lambda: work(decode_json(raw)))

        with_body.__annotations__ = {"request": Request}  # a class, not the string this module's annotations are
        return with_body

    for method, path, name in ROUTES:
        app.add_api_route(
            PREFIX + path, endpoint(method, getattr(api, name)), methods=[method], dependencies=dependencies
        )

    def history(q: str = "", any_word: str = "false", limit: str = "0"):
        return answer(lambda: api.history(q, any_word, limit))

    app.add_api_route(f"{PREFIX}/history", history, methods=["GET"], dependencies=dependencies)

    def checkpoint(title: str = ""):
        return answer(lambda: api.checkpoint(title))

    app.add_api_route(f"{PREFIX}/checkpoint", checkpoint, methods=["GET"], dependencies=dependencies)

    def gen():
        return answer(api.gen_defaults)

    app.add_api_route(f"{PREFIX}/gen", gen, methods=["GET"], dependencies=dependencies)

    def font():
        return answer(api.font)

    app.add_api_route(f"{PREFIX}/font", font, methods=["GET"], dependencies=dependencies)
    add_optimize_routes(app, studies or OptimizeDesk(workbench), PREFIX, dependencies)


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
