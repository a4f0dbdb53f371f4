"""What a study asks for, and the plan it becomes once every part is checked: nothing runs, no model is
merged and no storage is opened before the whole request is known to be sound."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from lib_merge.app.optimize.samplers import SAMPLERS
from lib_merge.app.optimize.scorers import HUMAN, BuiltinScorer, Objective, parse_objectives
from lib_merge.app.optimize.space import SearchSpace, parse_space
from lib_merge.arch.blocks import BlockSchema
from lib_merge.errors import ParameterError
from lib_merge.paths import inside_folder, user_data_dir
from lib_merge.recipe import parse_recipe
from lib_merge.recipe.nodes import ModelRef, Node, open_params, primary_model

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_TRIALS = 10_000
MAX_SEEDS = 64


@dataclass
class StudyGen:
    """The images of every trial: each seed with every prompt; the holdout seeds only for the report."""

    prompt: list[str] | str = field(default_factory=list)  # empty: the txt2img prompt of the host's last run
    negative_prompt: str | None = None
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    holdout_seeds: list[int] = field(default_factory=lambda: [101, 102, 103])
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    sampler_name: str | None = None
    cfg_scale: float | None = None


@dataclass
class StudyRequest:
    study: str
    recipe: str  # a template: its open param("name") inputs are searched
    space: dict
    trials: int = 20  # the study's finished trials to reach (a resumed study goes on to this count)
    sampler: str = "tpe"
    seed: int = 0
    scorer: Any = "aesthetic"  # one objective, or a list of them (a Pareto front)
    gen: StudyGen = field(default_factory=StudyGen)
    storage: str = ""  # an Optuna storage URL; empty: a SQLite file under <user-data>/optimize/
    restore_after: bool = True  # model A again after the study


@dataclass
class StudyPlan:
    request: StudyRequest
    template: Node  # model titles resolved to files
    space: SearchSpace
    schema: BlockSchema | None
    objectives: list[Objective]
    storage: str

    @property
    def name(self) -> str:
        return self.request.study

    @property
    def human(self) -> bool:
        """Scored by a person's choices between pairs of trials."""
        return self.objectives[0].scorer == HUMAN

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def image_folder(self) -> str:
        return os.path.join(study_folder(), self.name)


def study_folder() -> str:
    return str(user_data_dir() / "optimize")


def trial_folder(images: str, number: int) -> str:
    """Where a trial's images are kept, inside its study's folder."""
    return os.path.join(images, f"trial-{number:04d}")


def default_storage() -> str:
    return "sqlite:///" + os.path.join(study_folder(), "studies.db")


def check_study_name(name: Any) -> str:
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        raise ParameterError(f"study name {name!r}: 1 to 64 letters, digits, '.', '-' or '_' (no path)")
    return name


def plan_study(
    request: StudyRequest,
    resolve_template,
    file_schema_of,
    builtins: dict[str, BuiltinScorer],
    scorer_settings: Any = None,
) -> StudyPlan:
    """Every check of a study before it runs. `resolve_template(node)` maps model titles to files (the
    Workbench's `recipe_of` rules); `file_schema_of(path)` reads model A's block schema from its header."""
    check_study_name(request.study)
    trials = request.trials
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise ParameterError(f"trials must be a whole number from 1 to {MAX_TRIALS}, not {trials!r}")
    if request.sampler not in SAMPLERS:
        raise ParameterError(f"unknown sampler {request.sampler!r}; use one of {', '.join(SAMPLERS)}")
    if isinstance(request.seed, bool) or not isinstance(request.seed, int) or not 0 <= request.seed < 2**32:
        raise ParameterError(f"seed must be a whole number from 0 to 2**32 - 1, not {request.seed!r}")
    _check_gen(request.gen)
    if not isinstance(request.recipe, str) or not request.recipe.strip():
        raise ParameterError('"recipe" must be a recipe template with param("name") inputs')
    template = parse_recipe(request.recipe)
    names = open_params(template)
    if not names:
        raise ParameterError('the recipe has no open param("name") input to search')
    space = parse_space(request.space)
    objectives = parse_objectives(request.scorer, builtins, scorer_settings)
    if request.sampler == "cmaes" and len(objectives) > 1:
        raise ParameterError("the cmaes sampler searches one objective; use tpe or random for several")
    storage = check_storage(request.storage)
    if objectives[0].scorer == HUMAN and request.sampler == "grid":
        raise ParameterError('a study scored by "human" proposes trials from the choices: use tpe, cmaes or random')
    if objectives[0].scorer == HUMAN and not storage.startswith("sqlite"):
        raise ParameterError('a study scored by "human" runs in one WebUI: leave "storage" empty or name a SQLite file')
    template = resolve_template(template)
    primary = primary_model(template)
    if not isinstance(primary, ModelRef):
        raise ParameterError("model A of a study's recipe must be a model file, not an open param()")
    schema = file_schema_of(primary.path)
    space.check_against(names, schema)
    return StudyPlan(request, template, space, schema, objectives, storage)


def check_storage(url: str) -> str:
    """The study's storage URL: empty for the SQLite file under user data; a SQLite file elsewhere only
    inside <user-data>/optimize/ (a client must not create files anywhere on the disk); a database server
    by any URL SQLAlchemy reads (PostgreSQL, MySQL)."""
    if not url:
        return default_storage()
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ParameterError(f"storage {url!r} is no database URL (e.g. postgresql://user@host/db)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = os.path.realpath(parsed.database or "")
        if not parsed.database or not inside_folder(path, study_folder()) or path == os.path.realpath(study_folder()):
            raise ParameterError(f"a SQLite storage must be a file in {study_folder()}")
        return url
    if backend not in ("postgresql", "mysql"):
        raise ParameterError(f"storage {backend}: use a SQLite file, PostgreSQL or MySQL")
    return url


def _check_gen(gen: StudyGen) -> None:
    if isinstance(gen.prompt, str):
        gen.prompt = [gen.prompt] if gen.prompt.strip() else []
    for name in ("seeds", "holdout_seeds"):
        seeds = getattr(gen, name)
        if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ParameterError(f'"{name}" must be a list of whole numbers')
        if not 0 <= len(seeds) <= MAX_SEEDS or any(not 0 <= s < 2**32 for s in seeds):
            raise ParameterError(f'"{name}": at most {MAX_SEEDS} seeds from 0 to 2**32 - 1')
    if not gen.seeds:
        raise ParameterError('"seeds" needs one seed at least')
    shared = sorted(set(gen.seeds) & set(gen.holdout_seeds))
    if shared:
        raise ParameterError(f"holdout seeds must be seeds the search never sees; both name {shared[0]}")
    if not isinstance(gen.prompt, list) or not all(isinstance(p, str) for p in gen.prompt) or len(gen.prompt) > 16:
        raise ParameterError('"prompt" must be a list of at most 16 prompts')
    if gen.steps is not None and not _whole(gen.steps, 1, 150):
        raise ParameterError(f'"steps" must be a whole number from 1 to 150, not {gen.steps!r}')
    for name in ("width", "height"):  # the WebUI's own limits: the latent is an eighth of the image
        value = getattr(gen, name)
        if value is not None and (not _whole(value, 64, 2048) or value % 8):
            raise ParameterError(f'"{name}" must be a multiple of 8 from 64 to 2048, not {value!r}')
    if gen.sampler_name is not None and (not isinstance(gen.sampler_name, str) or not gen.sampler_name.strip()):
        raise ParameterError(f'"sampler_name" must be a sampler\'s name, not {gen.sampler_name!r}')
    if gen.negative_prompt is not None and not isinstance(gen.negative_prompt, str):
        raise ParameterError('"negative_prompt" must be text')
    cfg = gen.cfg_scale
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 1 <= cfg <= 30):
        raise ParameterError(f'"cfg_scale" must be a number from 1 to 30, not {cfg!r}')


def check_sampler(name: str | None, known: list[str]) -> None:
    """The WebUI replaces a sampler name it does not know with its default and only logs it: a study would
    search with a sampler the user did not ask for. `known` empty: the host does not list its samplers."""
    if name is not None and known and name not in known:
        raise ParameterError(f"unknown sampler_name {name!r}; the WebUI has {', '.join(known)}")


def _whole(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high
