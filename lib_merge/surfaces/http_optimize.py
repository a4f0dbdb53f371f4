"""The Optimize routes under /alloy/v1: start a study, read it, stop it, apply its best trial; for a study
scored by a person, the next pair of trials and the person's choice.

A study's request is checked whole before anything runs (a 400 in one line); a second study while one
runs is a 409, like a busy merge."""

from __future__ import annotations

from typing import Any

from lib_merge.app.json_fields import checked_fields
from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.optimize.request import StudyGen, StudyRequest
from lib_merge.surfaces.http_common import answer, flag, json_object

REQUIRED = ("study", "recipe", "space")


def study_request(body: Any) -> tuple[StudyRequest, bool]:
    """POST /optimize's body as a StudyRequest, and whether to wait for the study's end."""
    body = json_object(body)
    wait = flag(body, "wait", True)
    fields = checked_fields(StudyRequest, {k: v for k, v in body.items() if k != "wait"}, loose=("gen", "scorer"))
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        raise ValueError(f"a study needs {', '.join(repr(m) for m in missing)}")
    gen = checked_fields(StudyGen, fields.pop("gen", None), '"gen"')
    return StudyRequest(**fields, gen=StudyGen(**gen)), wait


def add_optimize_routes(app, studies: OptimizeDesk, prefix: str, dependencies: list) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from lib_merge.surfaces.http_common import decode_json

    def start(body: Any) -> dict:
        request, wait = study_request(body)
        run = studies.start(request, wait=wait)
        if wait:
            return studies.status(run.plan.name)
        return {"study": run.plan.name, "state": run.state, "trials": [], "best": [], "report": None,
                "progress": run.control.progress()}  # fmt: skip

    async def post_optimize(request):
        raw = await request.body()
        return await run_in_threadpool(answer, lambda: start(decode_json(raw)))

    post_optimize.__annotations__ = {"request": Request}

    def status(study: str):
        return answer(lambda: studies.status(study))

    def stop(study: str):
        return answer(lambda: studies.stop(study))

    def apply(study: str):
        def work() -> dict:
            outcome = studies.apply(study)
            return {"name": outcome.name, "hash": outcome.recipe_hash, "history_id": outcome.history_id,
                    "message": outcome.message}  # fmt: skip

        return answer(work)

    def pair(study: str):
        return answer(lambda: studies.pair(study))

    def choose(study: str, body: Any) -> dict:
        body = json_object(body)
        unknown = sorted(set(body) - {"pair_id", "winner"})
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}: a choice has pair_id and winner")
        return studies.choose(study, body.get("pair_id"), body.get("winner"))

    async def post_choice(study: str, request):
        raw = await request.body()
        return await run_in_threadpool(answer, lambda: choose(study, decode_json(raw)))

    post_choice.__annotations__ = {"study": str, "request": Request}

    app.add_api_route(f"{prefix}/optimize/{{study}}/pair", pair, methods=["GET"], dependencies=dependencies)
    app.add_api_route(f"{prefix}/optimize/{{study}}/choice", post_choice, methods=["POST"], dependencies=dependencies)
    app.add_api_route(f"{prefix}/optimize", post_optimize, methods=["POST"], dependencies=dependencies)
    app.add_api_route(f"{prefix}/optimize/{{study}}", status, methods=["GET"], dependencies=dependencies)
    app.add_api_route(f"{prefix}/optimize/{{study}}/stop", stop, methods=["POST"], dependencies=dependencies)
    app.add_api_route(f"{prefix}/optimize/{{study}}/apply", apply, methods=["POST"], dependencies=dependencies)
