"""The trials of a study: Optuna draws the template's inputs, Alloy merges them into the loaded model in
place, generates the study's seeds × prompts, scores the images and logs one history row per trial.

Optuna's own loop (`Study.optimize`) runs the trials, so its storage keeps every trial's state: a trial cut
off by a kill stops sending heartbeats and is marked failed at the next start, and a failed merge or
scorer fails its trial only.
"""

from __future__ import annotations

import inspect
import os
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from lib_merge.app.history import RowDraft, try_append_history
from lib_merge.app.optimize.human import HumanPacer
from lib_merge.app.optimize.request import StudyPlan, trial_folder
from lib_merge.app.optimize.samplers import make_sampler
from lib_merge.app.optimize.scorers import checked_scores
from lib_merge.app.optimize.space import Blocks, block_dimension_names
from lib_merge.app.ports import GenSettings
from lib_merge.app.requests import MergeRequest
from lib_merge.errors import AlloyError, ParameterError
from lib_merge.io.tempfiles import write_file
from lib_merge.recipe.compose import compose

HEARTBEAT_SECONDS = 5
MAX_FAILED_IN_A_ROW = 3
GRACE_SECONDS = 20
MAX_RETRIES = 2


@dataclass
class StudyControl:
    """Shared between the study's thread and the surfaces: the Stop request and the live progress."""

    stop: threading.Event = field(default_factory=threading.Event)
    done: int = 0  # trials finished in this run
    planned: int = 0  # trials this run means to finish
    started: float = field(default_factory=time.monotonic)
    last_done: float = 0.0  # when the latest trial of this run ended
    ended: float = 0.0  # when the run ended (0: running)
    warnings: list[str] = field(default_factory=list)

    def trial_done(self) -> None:
        self.done += 1
        self.last_done = time.monotonic()

    def progress(self, running: bool = True) -> dict:
        """Trials done of this run, and the time left: the mean trial time so far for each trial to come,
        less what the current trial has run already (so it counts down during a trial)."""
        now = self.ended or time.monotonic()
        eta = None
        if running and self.done:
            per_trial = (self.last_done - self.started) / self.done
            eta = max(per_trial * (self.planned - self.done) - (now - self.last_done), 0.0)
        return {"done": self.done, "planned": self.planned, "seconds": round(now - self.started, 1),
                "eta_seconds": None if eta is None else round(eta, 1)}  # fmt: skip


def open_study(plan: StudyPlan, instance: str = "", shared: bool | None = None):
    """The study in its storage, with heartbeats (a killed trial is failed later, and run again). `shared`:
    other instances work on it at the same time (default: when the storage is a database server)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    if plan.storage.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(plan.storage[len("sqlite:///") :]) or ".", exist_ok=True)
    storage = _storage(plan.storage)
    sampler = make_sampler(plan.request.sampler, plan.request.seed, plan.space, plan.schema, len(plan.objectives))
    study = optuna.create_study(
        study_name=plan.name, storage=storage, sampler=sampler, directions=plan.directions, load_if_exists=True
    )
    check_resumable(study, plan)
    study.set_user_attr("target_trials", plan.request.trials)  # a later reader tells done from stopped
    optuna.storages.fail_stale_trials(study)  # trials of a process that died: failed now, their copies waiting
    existing = len(study.get_trials(deepcopy=False))
    # A resumed study's seed moves on by its trials, so the first draws are not replayed; on a database server
    # each instance's seed differs too, else instances starting together would draw the same inputs.
    if shared is None:
        shared = not plan.storage.startswith("sqlite")
    mixed = instance if shared else ""
    if existing or mixed:
        seed = (plan.request.seed + existing + zlib.crc32(mixed.encode())) % 2**32
        study.sampler = make_sampler(plan.request.sampler, seed, plan.space, plan.schema, len(plan.objectives))
    return study


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


def _storage(url: str):
    """Optuna's storage with heartbeats; a trial whose process died is failed and a copy of it queued."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    options = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS}
    stale = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna 4.9 and later
    if (
        stale is not None
        and "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
    ):
        options["heartbeat_stale_trial_callback"] = stale(max_retry=MAX_RETRIES)
    else:
        options["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, **options)
        except (IntegrityError, ProgrammingError):  # another instance creates the same new database's tables
            time.sleep(0.5 + attempt)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors: no server there, no driver, no access
            raise ParameterError(f"storage {url}: {type(e).__name__}: {e}") from None
    raise ParameterError(f"storage {url}: its tables could not be created (tried 3 times)")


def finished_trials(study) -> int:
    """Trials that count towards the study's total: complete ones and those failed by an error of their own.
    A trial failed because its process died (no heartbeat) does not count: a copy of it runs again."""
    return counts(study)[0]


def stored_state(study) -> str:
    """A study no process here runs: "done" when it holds the total its last start asked for."""
    target = study.user_attrs.get("target_trials")
    return "done" if target is not None and finished_trials(study) >= target else "stopped"


def planned_trials(study, total: int) -> int:
    """The trials a run means to finish: the study's total less what it holds or runs already."""
    finished, running = counts(study)
    return max(total - finished - running, 0)


def counts(study) -> tuple[int, int]:
    """(finished as `finished_trials` counts them, running now in any process)."""
    finished = running = 0
    for t in study.get_trials(deepcopy=False):
        if _counts_as_finished(t):
            finished += 1
        elif t.state.name == "RUNNING":
            running += 1
    return finished, running


def _counts_as_finished(trial) -> bool:
    state = trial.state.name
    if state == "PRUNED":
        return not trial.user_attrs.get("surplus")
    return state == "COMPLETE" or (state == "FAIL" and "error" in trial.user_attrs)


def instance_name() -> str:
    """Who ran a trial, for studies several WebUIs share: ALLOY_INSTANCE, else this machine and process."""
    return os.environ.get("ALLOY_INSTANCE", "").strip()[:64] or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class TrialRunner:
    """One study's objective function over a Workbench."""

    plan: StudyPlan
    workbench: Any
    scorers: dict[str, Callable]  # objective scorer name -> score(images, prompts)
    control: StudyControl
    prompts: list[str]
    instance: str = field(default_factory=instance_name)  # named in every trial it runs
    pacer: HumanPacer | None = None  # a study scored by a person's choices
    on_trial: Callable | None = None  # hears of each trial this runner ends (the command line prints it)

    def run(self, study) -> None:
        """Trials until the study holds its total. Instances sharing the storage each claim a trial when Optuna
        asks for one; when the rest is running elsewhere, this one waits for those trials to end (or for their
        process to die: then their copies wait to be run, and it runs them)."""
        self.control.planned = planned_trials(study, self.plan.request.trials)
        if not self.more_to_run(study):
            return
        if self.pacer is not None:  # a resumed study: the person's open pairs first, then the proposal
            self.pacer.wait_and_queue(study)
        failed_in_a_row = [0]

        def after_trial(study, trial) -> None:
            if trial.user_attrs.get("surplus"):
                if not self.more_to_run(study):
                    study.stop()
                return
            self.control.trial_done()
            if self.on_trial is not None:
                self.on_trial(trial)
            failed_in_a_row[0] = failed_in_a_row[0] + 1 if trial.state.name == "FAIL" else 0
            if trial.state.name == "FAIL":
                self.control.warnings.append(f"trial {trial.number} failed: {trial.user_attrs.get('error', '')}")
            if failed_in_a_row[0] >= MAX_FAILED_IN_A_ROW:
                self.control.warnings.append(f"{MAX_FAILED_IN_A_ROW} trials failed in a row: the study stopped")
                study.stop()
                return
            newest = self.pacer.pair_new(study, trial) if self.pacer is not None else None
            if not self.more_to_run(study):
                study.stop()
            elif self.pacer is not None:  # the person's choices first, then the next trial's inputs
                self.pacer.wait_and_queue(study, newest)
            if self.control.stop.is_set():  # Stop during the wait: no next trial
                study.stop()

        study.optimize(self.objective, n_trials=None, catch=(AlloyError,), callbacks=[after_trial])
        if self.pacer is not None:  # the last trials' pairs too: the study is done when the person has judged
            self.pacer.wait_for_answers()
            self.pacer.fit(study)

    def more_to_run(self, study) -> bool:
        """Whether this instance should claim another trial; waits while other instances run the last ones."""
        import optuna

        total = self.plan.request.trials
        while not self.control.stop.is_set():
            optuna.storages.fail_stale_trials(study)  # a dead instance's trials: failed, their copies waiting
            finished, running = counts(study)
            if finished >= total:
                return False
            if finished + running < total:
                return True
            self.control.stop.wait(HEARTBEAT_SECONDS)
        return False

    def surplus(self, trial) -> bool:
        """Two instances that count at the same moment may both claim a trial when one is left: the storage
        numbers claims in order, so the later one sees the earlier and runs nothing (PRUNED, not counted)."""
        claimed = 0
        for t in trial.study.get_trials(deepcopy=False):
            if t.number < trial.number and (_counts_as_finished(t) or t.state.name in ("RUNNING", "WAITING")):
                claimed += 1
        return claimed >= self.plan.request.trials

    def objective(self, trial) -> float | tuple[float, ...]:
        trial.set_user_attr("instance", self.instance)
        if self.surplus(trial):
            import optuna

            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the study's total was reached by trials other instances claimed first")
        if self.pacer is not None:
            self.pacer.generating = trial.number
        try:
            return self.run_trial(trial)
        except AlloyError as e:
            trial.set_user_attr("error", str(e))  # the trial's reason, kept with it
            raise

    def run_trial(self, trial) -> float | tuple[float, ...]:
        plan, started = self.plan, time.perf_counter()
        drawn = plan.space.suggest(trial, plan.schema)
        root = compose(plan.template, plan.space.recipe_values(drawn, plan.schema), words=True)
        outcome = self.workbench.merge(MergeRequest(root=root, log=False))
        merged = time.perf_counter()
        images, prompts = self.generate(plan.request.gen.seeds)
        live = self.workbench.live
        if live is None or live.recipe.digest != outcome.recipe.digest:
            raise ParameterError("the loaded model changed during the trial (a Restore or another merge): not scored")
        generated = time.perf_counter()
        if images and all(_black(image) for image in images):  # scored like any image, but the user should know
            self.control.warnings.append(
                f"trial {trial.number}: every image is black (the merge may give NaN, or the VAE overflowed)"
            )
        values = [0.0] if plan.human else self.score(images, prompts)  # a person's choices come later
        scored = time.perf_counter()
        times = {"merge": round(merged - started, 3), "generate": round(generated - merged, 3),
                 "score": round(scored - generated, 3)}  # fmt: skip
        self.keep_images(trial.number, images)
        row = self.log(trial.number, outcome.recipe, drawn, values)
        trial.set_user_attr("times", times)
        trial.set_user_attr("recipe_hash", outcome.recipe.digest)
        trial.set_user_attr("history_id", row.id if row else 0)
        if not plan.human and not trial.study.user_attrs.get("scorer_check"):  # once per study
            self.check_scorers(trial.study, images, prompts, values)
        return values[0] if len(values) == 1 else tuple(values)

    def generate(self, seeds: list[int]) -> tuple[list, list[str]]:
        """Every seed with every prompt (one batch per seed: prompt i at seed + i, as the WebUI numbers a batch)."""
        gen = self.plan.request.gen
        base = self.workbench.host.generation.base_settings()  # the user's txt2img settings under the study's
        images, prompts = [], []
        for seed in seeds:
            settings = base.overlay(GenSettings(
                prompt=list(self.prompts), negative_prompt=gen.negative_prompt, seed=seed, steps=gen.steps,
                width=gen.width, height=gen.height, sampler=gen.sampler_name, cfg_scale=gen.cfg_scale,
                batch_size=len(self.prompts), n_iter=1, save_images=False,
            ))  # fmt: skip
            try:
                result = self.workbench.generate(settings)
            except AlloyError:
                raise
            except Exception as e:  # noqa: BLE001 - the host's own failure (a size its model cannot take)
                raise ParameterError(f"generation failed: {type(e).__name__}: {e}") from None
            images.extend(result.images[: len(self.prompts)])
            prompts.extend(self.prompts)
        return images, prompts

    def score(self, images: list, prompts: list[str]) -> list[float]:
        """The mean score of the images, per objective."""
        return [float(np.mean(self.scores_of(o.scorer, images, prompts))) for o in self.plan.objectives]

    def scores_of(self, scorer: str, images: list, prompts: list[str]) -> list[float]:
        """One scorer's per-image scores; a scorer that fails fails the trial with one line."""
        try:
            answer = self.scorers[scorer](images, prompts)
        except Exception as e:  # noqa: BLE001 - a plugin is the user's code
            raise ParameterError(f"scorer {scorer} failed: {type(e).__name__}: {e}") from None
        return checked_scores(scorer, answer, len(images))

    def keep_images(self, number: int, images: list) -> None:
        """Each image through a temporary file: a kill mid-write leaves no broken PNG for the gallery or a pair."""
        folder = trial_folder(self.plan.image_folder(), number)
        os.makedirs(folder, exist_ok=True)
        for i, image in enumerate(images):
            write_file(os.path.join(folder, f"{i:03d}.png"), lambda f, image=image: image.save(f, format="PNG"))

    def log(self, number: int, recipe, drawn: dict, values: list[float]):
        scores = {} if self.plan.human else dict(zip([o.scorer for o in self.plan.objectives], values, strict=True))
        settings = {"study": self.plan.name, "trial": number, "params": drawn, "scores": scores}
        draft = RowDraft.of(recipe, settings, name=f"{self.plan.name} trial {number}")
        return try_append_history(draft, self.workbench.history_path(), self.control.warnings.append)

    def check_scorers(self, study, images: list, prompts: list[str], values: list[float]) -> None:
        """Pure noise must score below the study's first images, else the scorer measures nothing useful."""
        rng = np.random.default_rng(0)
        noise = [Image.fromarray(rng.integers(0, 256, (im.height, im.width, 3), dtype=np.uint8)) for im in images]
        check = {}
        for objective, first in zip(self.plan.objectives, values, strict=True):
            noise_score = float(np.mean(self.scores_of(objective.scorer, noise, prompts)))
            worse = noise_score < first if objective.direction == "maximize" else noise_score > first
            check[objective.scorer] = {"noise": noise_score, "first_images": first, "ok": worse}
            if not worse:
                self.control.warnings.append(
                    f"scorer {objective.scorer} rates pure noise ({noise_score:.4g}) at least as well as the "
                    f"study's first images ({first:.4g}): it may not measure anything"
                )
        study.set_user_attr("scorer_check", check)


def _black(image) -> bool:
    extrema = image.getextrema()
    return all(high == 0 for _, high in extrema) if isinstance(extrema[0], tuple) else extrema[1] == 0
