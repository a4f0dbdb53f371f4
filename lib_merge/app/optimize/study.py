"""A study as its storage holds it: the checks a resumed study must pass, its best trial, its JSON answer,
and the held-out report, for the desk and for a driver of remote WebUIs alike."""

from __future__ import annotations

from lib_merge.app.optimize.report import holdout_report
from lib_merge.app.optimize.request import StudyPlan
from lib_merge.app.optimize.runner import TrialRunner
from lib_merge.app.requests import MergeOutcome, MergeRequest
from lib_merge.errors import ParameterError
from lib_merge.recipe.compose import compose
from lib_merge.recipe.nodes import MergeNode, walk_models


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


def load_study(name: str, storage: str):
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
    pairs = _pair_counts(study)
    try:
        if pairs is not None and not pairs["answered"]:
            best = []  # scored by a person who has not chosen yet: no trial is better than another
        else:
            best = [t.number for t in study.best_trials] if utilities is None else [best_trial(study).number]
    except (ValueError, RuntimeError, ParameterError):
        best = []
    directions = [d.name.lower() for d in study.directions]
    return {"study": study.study_name, "directions": directions, "trials": trials, "best": best,
            "report": study.user_attrs.get("report"),
            "scorer_check": study.user_attrs.get("scorer_check"),
            "pairs": pairs}  # fmt: skip


def _pair_counts(study) -> dict | None:
    pairs = study.user_attrs.get("pairs")
    if pairs is None:
        return None
    return {"answered": sum(p["winner"] is not None for p in pairs), "pending": sum(p["winner"] is None for p in pairs)}


def study_report(plan: StudyPlan, study, runner: TrialRunner) -> dict:
    """Best, A and B on the held-out seeds (B: the recipe's second model alone), on the runner's workbench."""
    workbench, seeds = runner.workbench, plan.request.gen.holdout_seeds
    scores: dict[str, dict[str, list[float]]] = {}
    best = best_trial(study)
    merge_params(workbench, plan, best.params)
    scores["best"] = _per_image(runner, seeds)
    workbench.restore()
    scores["A"] = _per_image(runner, seeds)
    models = walk_models(plan.template)
    if len(models) > 1:  # B in place: lerp at 1 gives B's weights exactly, and Restore gives A back
        b_alone = MergeNode("weighted_sum", tuple(models[:2]), {"alpha": 1.0})
        workbench.merge(MergeRequest(root=b_alone, log=False))
        scores["B"] = _per_image(runner, seeds)
        workbench.restore()
    report = holdout_report(scores, {o.scorer: o.direction for o in plan.objectives})
    report.update(best_trial=best.number, holdout_seeds=seeds, warnings=list(runner.control.warnings))
    return report


def _per_image(runner: TrialRunner, seeds: list[int]) -> dict[str, list[float]]:
    images, prompts = runner.generate(seeds)
    return {o.scorer: runner.scores_of(o.scorer, images, prompts) for o in runner.plan.objectives}


def merge_params(workbench, plan: StudyPlan, params: dict, log: bool = False, ui: dict | None = None) -> MergeOutcome:
    """A trial's inputs merged into the loaded model (Apply best, the report)."""
    root = compose(plan.template, plan.space.recipe_values(params, plan.schema), words=True)
    return workbench.merge(MergeRequest(root=root, log=log, ui=ui or {}))
