"""A study run from here over running WebUIs, through their HTTP routes (/alloy/v1 for merges, /sdapi/v1 for
images): nothing to install in them but Alloy. Each WebUI is one worker thread on the study's storage, so the
trials are claimed, retried and counted as when each WebUI runs the study itself; the images are scored here,
with the scorers of this machine's user-data folder, and the trials are logged in this machine's history.

`RemoteBench` answers what a TrialRunner asks of a Workbench, over one WebUI's API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib_merge.app.optimize.request import StudyRequest, plan_study
from lib_merge.app.optimize.runner import StudyControl, TrialRunner, finished_trials, open_study
from lib_merge.app.optimize.scorers import BuiltinScorer, load_scorer
from lib_merge.app.optimize.study import study_json, study_report
from lib_merge.app.ports import GenResult, GenSettings
from lib_merge.app.requests import MergeRequest
from lib_merge.app.webui_client import WebUIClient, check_webuis, run_each
from lib_merge.arch.blocks import schema_for
from lib_merge.errors import AlloyError, ParameterError, message_for
from lib_merge.recipe.hashed import HashedRecipe
from lib_merge.recipe.printer import print_recipe


@dataclass
class _Live:
    recipe: HashedRecipe


@dataclass
class _Outcome:
    recipe: HashedRecipe
    history_id: int
    name: str
    message: str = ""


class RemoteBench:
    """What a TrialRunner (and the held-out report) asks of a Workbench, over one WebUI's API. The recipe's
    models are the WebUI's checkpoint titles: the WebUI resolves them."""

    def __init__(self, client: WebUIClient, history: Path, gen_base: GenSettings) -> None:
        self.client = client
        self._history = history
        self._gen_base = gen_base
        self.host = self  # TrialRunner asks host.generation.base_settings()
        self.generation = self

    def base_settings(self) -> GenSettings:
        return self._gen_base  # what the study leaves open: the first WebUI's own settings, for every WebUI

    def merge(self, request: MergeRequest) -> _Outcome:
        text = print_recipe(request.root)
        answer = self.client.merge(text, log=False)
        return _Outcome(HashedRecipe(request.root, text, answer["hash"]), answer.get("history_id") or 0,
                        answer.get("name") or "", answer.get("message") or "")  # fmt: skip

    @property
    def live(self) -> _Live | None:
        status = self.client.call("GET", "/alloy/v1/status")
        return _Live(HashedRecipe(None, "", status["hash"])) if status.get("merged") else None

    def restore(self) -> str:
        return self.client.restore()

    def generate(self, gen: GenSettings) -> GenResult:
        return GenResult(self.client.generate(gen), "")

    def history_path(self) -> Path:
        return self._history


@dataclass
class Worker:
    client: WebUIClient
    control: StudyControl = field(default_factory=StudyControl)
    error: str = ""


def drive_study(
    request: StudyRequest,
    clients: list[WebUIClient],
    history: Path,
    builtins: dict[str, BuiltinScorer],
    settings: Any = None,
    on_trial=None,
) -> dict:
    """Run the study on every WebUI at once until it holds `request.trials` finished trials; its JSON answer
    (with "state" and each worker's error). `on_trial(instance, trial)` hears of every finished trial."""
    check_webuis(clients)
    first = clients[0]
    plan = plan_study(request, lambda template: template, lambda title: schema_for(first.arch(title)), builtins,
                      settings)  # fmt: skip
    if plan.human:
        raise ParameterError('a study scored by "human" runs in the WebUI\'s Optimize tab, where the person is')
    scorers = {o.scorer: load_scorer(o.scorer, builtins, settings) for o in plan.objectives}
    prompts = list(request.gen.prompt) or [""]
    workers = [Worker(client) for client in clients]
    gen_base = first.gen_defaults()
    runners = []
    for worker in workers:
        study = open_study(plan, worker.client.url, shared=len(clients) > 1 or None)
        url = worker.client.url
        heard = None if on_trial is None else (lambda trial, url=url: on_trial(url, trial))
        runner = TrialRunner(plan, RemoteBench(worker.client, history, gen_base), scorers, worker.control, prompts,
                             url, on_trial=heard)  # fmt: skip
        runners.append((runner, study))

    def work(worker: Worker, runner: TrialRunner, study) -> None:
        try:
            runner.run(study)
        except Exception as e:  # noqa: BLE001 - one WebUI's failure ends its worker; the others go on
            worker.error = message_for(e, "cli") if isinstance(e, AlloyError) else f"{type(e).__name__}: {e}"
        finally:
            if request.restore_after:
                try:
                    runner.workbench.restore()
                except AlloyError as e:
                    worker.error = worker.error or message_for(e, "cli")

    def interrupted() -> None:  # Ctrl-C: each worker stops after its current trial
        for worker in workers:
            worker.control.stop.set()

    works = [lambda w=w, r=r, s=s: work(w, r, s) for w, (r, s) in zip(workers, runners, strict=True)]
    run_each(works, "alloy-remote", interrupted)
    runner, study = runners[0]
    done = finished_trials(study) >= request.trials
    if done and request.gen.holdout_seeds:
        study.set_user_attr("report", study_report(plan, study, runner))
        if request.restore_after:
            runner.workbench.restore()
    answer = study_json(study)
    errors = {w.client.url: w.error for w in workers if w.error}
    answer["state"] = "done" if done else ("error" if errors else "stopped")
    answer["errors"] = errors
    answer["warnings"] = [w for worker in workers for w in worker.control.warnings]
    return answer
