"""The optimize desk: one study at a time per Workbench, run in its own thread; Stop ends it after the
current trial, and starting the same study again resumes it. Every surface (the tab, the HTTP routes)
asks this desk, and the study's storage answers for trials a former process ran."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from lib_merge.app.apply import resolve_recipe
from lib_merge.app.optimize.human import HumanPacer, pair_json
from lib_merge.app.optimize.pairs import PairBook
from lib_merge.app.optimize.preference import best as preference_best
from lib_merge.app.optimize.report import holdout_report
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
)
from lib_merge.app.optimize.scorers import BuiltinScorer, load_scorer
from lib_merge.app.optimize.space import Blocks, block_dimension_names
from lib_merge.app.requests import MergeOutcome, MergeRequest
from lib_merge.errors import AlloyError, BusyError, ParameterError, message_for
from lib_merge.io.source import file_schema
from lib_merge.recipe.compose import compose
from lib_merge.recipe.nodes import MergeNode, walk_models

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
            check_resumable(study, plan)
            study.set_user_attr("target_trials", plan.request.trials)
            run = self._runs[plan.name] = StudyRun(plan, instance=instance)
            if plan.human:
                run.pacer = HumanPacer(plan, PairBook(study), run.control.stop)
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
        return pair_json(run.pacer.book, run.plan, run.state == "running", run.pacer.generating, files)

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
                        study.set_user_attr("report", self._report(plan, study, runner))
                finally:  # model A again even when the study ends in an error
                    if plan.request.restore_after:
                        workbench.restore()
            run.state = "done" if finished else "stopped"
        except Exception as e:  # noqa: BLE001 - the study's answer says what went wrong, the server stays up
            run.state, run.error = "error", message_for(e, "http") if isinstance(e, AlloyError) else repr(e)

    def _report(self, plan: StudyPlan, study, runner: TrialRunner) -> dict:
        """Best, A and B on the held-out seeds (B: the recipe's second model alone)."""
        seeds = plan.request.gen.holdout_seeds
        scores: dict[str, dict[str, list[float]]] = {}
        best = best_trial(study)
        self._merge_params(plan, best.params)
        scores["best"] = self._per_image(runner, seeds)
        self.workbench.restore()
        scores["A"] = self._per_image(runner, seeds)
        models = walk_models(plan.template)
        if len(models) > 1:  # B in place: lerp at 1 gives B's weights exactly, and Restore gives A back
            b_alone = MergeNode("weighted_sum", tuple(models[:2]), {"alpha": 1.0})
            self.workbench.merge(MergeRequest(root=b_alone, log=False))
            scores["B"] = self._per_image(runner, seeds)
            self.workbench.restore()
        report = holdout_report(scores, {o.scorer: o.direction for o in plan.objectives})
        report.update(best_trial=best.number, holdout_seeds=seeds, warnings=list(runner.control.warnings))
        return report

    @staticmethod
    def _per_image(runner: TrialRunner, seeds: list[int]) -> dict[str, list[float]]:
        images, prompts = runner.generate(seeds)
        return {o.scorer: runner.scores_of(o.scorer, images, prompts) for o in runner.plan.objectives}

    def _merge_params(self, plan: StudyPlan, params: dict, log: bool = False, ui: dict | None = None) -> MergeOutcome:
        root = compose(plan.template, plan.space.recipe_values(params, plan.schema), words=True)
        return self.workbench.merge(MergeRequest(root=root, log=log, ui=ui or {}))

    # -- answers -------------------------------------------------------------------------------------
    def status(self, name: str, storage: str = "") -> dict:
        check_study_name(name)
        run = self._runs.get(name)
        study = _load(name, storage or (run.plan.storage if run else default_storage()))
        answer = study_json(study)
        if run is not None:
            answer["state"] = run.state
        else:  # run by an earlier process: done when it holds the total its last start asked for
            target = study.user_attrs.get("target_trials")
            answer["state"] = "done" if target is not None and finished_trials(study) >= target else "stopped"
        answer["progress"] = run.control.progress(run.state == "running") if run else None
        answer["warnings"] = list(run.control.warnings) if run else []
        if run and run.error:
            answer["error"] = run.error
        return answer

    def load(self, name: str, storage: str = ""):
        """The study as Optuna holds it (for its importances)."""
        run = self._runs.get(check_study_name(name))
        return _load(name, storage or (run.plan.storage if run else default_storage()))

    def apply(self, name: str) -> MergeOutcome:
        """The best trial merged into the loaded model, with a history row."""
        run = self._runs.get(check_study_name(name))
        if run is None:
            raise ParameterError(f"the study {name} has not run since the server started: start it to resume")
        if run.state == "running":
            raise BusyError(f"the study {name} is running; stop it first")
        study = _load(name, run.plan.storage)
        best = best_trial(study)
        return self._merge_params(run.plan, best.params, log=True, ui={"study": name, "trial": best.number})


def check_resumable(study, plan: StudyPlan) -> None:
    """A study continues only with its own objectives and inputs: a changed space or scorer list would mix
    trials that measured different things."""
    directions = [d.name.lower() for d in study.directions]
    if directions != plan.directions:
        raise ParameterError(
            f"the study {plan.name} has {len(directions)} objective(s) ({', '.join(directions)}); this request has "
            f"{len(plan.directions)}: start a study of another name"
        )
    drawn = next((set(t.distributions) for t in study.get_trials(deepcopy=False) if t.distributions), None)
    wanted = set()
    for name, dim in plan.space.dimensions.items():
        wanted.update(block_dimension_names(name, dim, plan.schema) if isinstance(dim, Blocks) else [name])
    if drawn is not None and drawn != wanted:
        raise ParameterError(
            f"the study {plan.name} searched {', '.join(sorted(drawn))}; this space has {', '.join(sorted(wanted))}: "
            "start a study of another name"
        )


def best_trial(study):
    """The best trial; with several objectives, the Pareto front's best in the first objective; scored by a
    person, the trial of the highest utility their choices give."""
    utilities = _utilities(study)
    if utilities is not None:
        number = max(utilities, key=lambda n: (utilities[n], -n)) if utilities else None
        if number is None:
            raise ParameterError("the study has no finished trial yet")
        return next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if len(study.directions) == 1:
        try:
            return study.best_trial
        except ValueError:
            raise ParameterError("the study has no finished trial yet") from None
    front = study.best_trials
    if not front:
        raise ParameterError("the study has no finished trial yet")
    sign = 1 if study.directions[0].name == "MAXIMIZE" else -1
    return max(front, key=lambda t: sign * t.values[0])


def _load(name: str, storage: str):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ParameterError(f"no study named {name} in {storage}") from None
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors: the database is not there or not readable
        raise ParameterError(f"storage {storage}: {type(e).__name__}: {e}") from None


def _utilities(study) -> dict[int, float] | None:
    """A study scored by a person: each finished trial's utility from the choices (None: scored by scorers)."""
    kept = study.user_attrs.get("utilities")
    return None if kept is None else {int(n): float(u[0]) for n, u in kept.items()}


def study_json(study) -> dict:
    """The study as GET /optimize/{study} answers; scored by a person, a trial's value is its utility."""
    utilities = _utilities(study)
    trials = [
        {
            "number": t.number,
            "params": t.params,
            "values": [utilities[t.number]] if utilities is not None and t.number in utilities else t.values,
            "state": t.state.name,
            "history_id": t.user_attrs.get("history_id"),
            "recipe_hash": t.user_attrs.get("recipe_hash"),
            "times": t.user_attrs.get("times"),
            "instance": t.user_attrs.get("instance"),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    try:
        best = [t.number for t in study.best_trials] if utilities is None else [best_trial(study).number]
    except (ValueError, RuntimeError, ParameterError):
        best = []
    directions = [d.name.lower() for d in study.directions]
    return {"study": study.study_name, "directions": directions, "trials": trials, "best": best,
            "report": study.user_attrs.get("report"),
            "scorer_check": study.user_attrs.get("scorer_check"),
            "pairs": _pair_counts(study)}  # fmt: skip


def _pair_counts(study) -> dict | None:
    pairs = study.user_attrs.get("pairs")
    if pairs is None:
        return None
    return {"answered": sum(p["winner"] is not None for p in pairs), "pending": sum(p["winner"] is None for p in pairs)}
