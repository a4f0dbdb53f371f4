"""The optimize desk: one study at a time per Workbench, run in its own thread; Stop ends it after the
current trial, and starting the same study again resumes it. Every surface (the tab, the HTTP routes)
asks this desk, and the study's storage answers for trials a former process ran."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lib_merge.app.apply import resolve_recipe
from lib_merge.app.optimize.human import HumanPacer, pair_book, pair_json
from lib_merge.app.optimize.preference import best as preference_best
from lib_merge.app.optimize.request import (
    StudyPlan,
    StudyRequest,
    check_sampler,
    check_study_name,
    default_storage,
    plan_study,
)
from lib_merge.app.optimize.runner import (
    StudyControl,
    TrialRunner,
    finished_trials,
    instance_name,
    open_study,
    planned_trials,
    stored_state,
)
from lib_merge.app.optimize.scorers import BuiltinScorer, load_scorer
from lib_merge.app.optimize.study import (
    best_trial,
    load_study,
    merge_params,
    study_json,
    study_report,
)
from lib_merge.app.requests import MergeOutcome
from lib_merge.errors import AlloyError, BusyError, ParameterError, message_for
from lib_merge.io.source import file_schema

STATES = ("running", "stopped", "done", "error")


@dataclass
class StudyRun:
    """A study as this process last ran it."""

    plan: StudyPlan
    control: StudyControl = field(default_factory=StudyControl)
    state: str = "running"
    error: str = ""
    thread: threading.Thread | None = None
    instance: str = ""  # this process's name in the trials it runs
    pacer: HumanPacer | None = None  # a study scored by a person: its pairs and their answers


class OptimizeDesk:
    def __init__(self, workbench, builtins: dict[str, BuiltinScorer] | None = None, settings: Any = None):
        from lib_merge.app.optimize.builtin import BUILTIN_SCORERS

        self.workbench = workbench
        self.builtins = BUILTIN_SCORERS if builtins is None else builtins
        self._settings = settings  # None: from the host's settings at each start
        self._lock = threading.Lock()
        self._runs: dict[str, StudyRun] = {}

    @property
    def settings(self):
        """Where the built-in scorers' weights are and whether they may be fetched (the host's Settings)."""
        from lib_merge.app.optimize.builtin import ScorerSettings

        if self._settings is not None:
            return self._settings
        config = self.workbench.host.config()
        return ScorerSettings(ScorerSettings.default().folder, config.fetch_scorer_models, config.device)

    # -- starting ----------------------------------------------------------------------------------
    def plan(self, request: StudyRequest) -> StudyPlan:
        """Every check before anything runs (a 400 on the HTTP route)."""
        if self.workbench.host.generation is None:
            raise ParameterError("studies generate images: this host cannot (the standalone app)")
        host = self.workbench.host

        def resolve(template):
            return resolve_recipe(template, host.resolve_checkpoint, host.lora_folder())

        plan = plan_study(request, resolve, file_schema, self.builtins, self.settings)
        check_sampler(request.gen.sampler_name, host.generation.sampler_names())
        return plan

    def start(self, request: StudyRequest, wait: bool = True) -> StudyRun:
        plan = self.plan(request)
        with self._lock:
            if self.running() is not None:
                raise BusyError(f"the study {self.running().plan.name} is running; stop it first")
            instance = instance_name()
            study = open_study(plan, instance)  # the storage answers (or its error is the request's) first
            run = self._runs[plan.name] = StudyRun(plan, instance=instance)
            if plan.human:
                run.pacer = HumanPacer(plan, pair_book(study), run.control.stop)
            run.control.planned = planned_trials(study, plan.request.trials)  # the first answer tells it too
            name = f"alloy-study-{plan.name}"
            run.thread = threading.Thread(target=self._run, args=(run, study), name=name, daemon=True)
            run.thread.start()
        if wait:
            run.thread.join()
        return run

    def running(self) -> StudyRun | None:
        return next((r for r in self._runs.values() if r.state == "running"), None)

    def stop(self, name: str) -> dict:
        run = self._runs.get(check_study_name(name))
        if run is None:
            raise ParameterError(f"the study {name} is not running (it has not run since the server started)")
        if run.state != "running":
            return {"study": name, "stopping": False, "state": run.state}
        run.control.stop.set()
        if run.pacer is not None:  # a study waiting for the person's choice stops now
            run.pacer.chosen()
        return {"study": name, "stopping": True, "state": "running"}

    # -- a person's choices --------------------------------------------------------------------------
    def pair(self, name: str, files: bool = False) -> dict:
        """The pair the person should judge next (GET …/pair; `files`: image paths for the tab), or why
        there is none."""
        run = self._human_run(name)
        if run.state != "running":
            state = "done: every pair is judged" if run.state == "done" else f"{run.state}: start it again to go on"
            reason = f"the study is {state}"
        elif run.pacer.generating is not None:
            reason = f"trial {run.pacer.generating} is being made"
        elif finished_trials(run.pacer.book.study) >= run.plan.request.trials:
            reason = "every trial is made and judged: the study is ending"
        else:
            reason = "the next trial is being made"
        return pair_json(run.pacer.book, run.plan, reason, files)

    def choose(self, name: str, pair_id: Any, winner: Any) -> dict:
        """The person's answer to a pair; the study goes on with it."""
        run = self._human_run(name)
        pair = run.pacer.book.answer(pair_id, winner)
        utilities = run.pacer.fit(run.pacer.book.study)
        run.pacer.chosen()
        return {"pair_id": pair.id, "winner": pair.winner, "best": preference_best(utilities)}

    def _human_run(self, name: str) -> StudyRun:
        run = self._runs.get(check_study_name(name))
        if run is None:
            load_study(name, default_storage())  # "no study named …" when there is none
            raise ParameterError(f"the study {name} has not run since the server started: start it to resume")
        if run.pacer is None:
            raise ParameterError(f'the study {name} is scored by {run.plan.objectives[0].scorer}, not by "human"')
        return run

    # -- the study's thread --------------------------------------------------------------------------
    def _run(self, run: StudyRun, study) -> None:
        plan, workbench = run.plan, self.workbench
        try:
            scorers = {} if plan.human else {
                o.scorer: load_scorer(o.scorer, self.builtins, self.settings) for o in plan.objectives}  # fmt: skip
            prompts = list(plan.request.gen.prompt) or [workbench.host.generation.base_settings().prompt or ""]
            runner = TrialRunner(plan, workbench, scorers, run.control, prompts, run.instance, run.pacer)
            # The loaded model is the study's until it ends: no XYZ plot, merge or Restore interleaves.
            with workbench.plot_lock, workbench.hold.held_by(f"the study {plan.name}"):
                try:
                    runner.run(study)
                    finished = finished_trials(study) >= plan.request.trials
                    if finished and plan.request.gen.holdout_seeds and not plan.human:
                        study.set_user_attr("report", study_report(plan, study, runner))
                finally:  # model A again even when the study ends in an error
                    if plan.request.restore_after:
                        workbench.restore()
            run.state = "done" if finished else "stopped"
        except Exception as e:  # noqa: BLE001 - the study's answer says what went wrong, the server stays up
            run.state, run.error = "error", message_for(e, "http") if isinstance(e, AlloyError) else repr(e)
        finally:
            run.control.ended = time.monotonic()

    # -- answers -------------------------------------------------------------------------------------
    def status(self, name: str, storage: str = "") -> dict:
        check_study_name(name)
        run = self._runs.get(name)
        study = load_study(name, storage or (run.plan.storage if run else default_storage()))
        answer = study_json(study)
        if run is not None:
            answer["state"] = run.state
        else:  # run by an earlier process
            answer["state"] = stored_state(study)
        answer["progress"] = run.control.progress(run.state == "running") if run else None
        if run is not None and run.pacer is not None:  # its pace is the person's: no time left to tell
            answer["progress"]["eta_seconds"] = None
        answer["warnings"] = list(run.control.warnings) if run else []
        if run and run.error:
            answer["error"] = run.error
        return answer

    def load(self, name: str, storage: str = ""):
        """The study as Optuna holds it (for its importances)."""
        run = self._runs.get(check_study_name(name))
        return load_study(name, storage or (run.plan.storage if run else default_storage()))

    def apply(self, name: str) -> MergeOutcome:
        """The best trial merged into the loaded model, with a history row."""
        run = self._runs.get(check_study_name(name))
        if run is None:
            raise ParameterError(f"the study {name} has not run since the server started: start it to resume")
        if run.state == "running":
            raise BusyError(f"the study {name} is running; stop it first")
        study = load_study(name, run.plan.storage)
        best = best_trial(study)
        return merge_params(self.workbench, run.plan, best.params, log=True, ui={"study": name, "trial": best.number})
