"""A merge written to a file with its history row: the one service the CLI, the HTTP API and the tabs
save through, so the same request gives the same defaults, the same row and the same bytes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lib_merge.app.history.log import Warn
from lib_merge.app.history.record import merge_and_log
from lib_merge.app.history.rows import HistoryRow
from lib_merge.app.requests import SaveRequest
from lib_merge.engine.bind import BoundRecipe
from lib_merge.engine.layout_choice import output_layout
from lib_merge.engine.options import EngineOptions
from lib_merge.engine.to_file import MergeResult, SaveOptions
from lib_merge.errors import HostPatchError
from lib_merge.io.dtypes import parse_output_dtype
from lib_merge.io.tempfiles import format_for_output
from lib_merge.recipe.nodes import Node
from lib_merge.recipe.printer import cast_dtype


@dataclass
class SaveJob:
    """Where and how one merge is saved, and what its history row says about it."""

    target: str  # the file to write
    save: SaveRequest  # as the user asked: its empty dtype means the recipe's cast, else `default_dtype`
    settings: dict  # the row's settings column, without "save" (history.settings_record)
    default_dtype: str = "fp16"  # the host's setting for saved checkpoints
    metadata: bool = True  # False: no recipe or modelspec metadata in the file
    row_name: str = ""  # the row's name (a live merge's); empty: the file's name


def save_request_for(output: str, dtype: str | None, format_name: str | None, **flags: bool) -> SaveRequest:
    """The save request of a path given whole (the CLI's -o): the file's stem is its name and its
    ending its format, so its row reads like the same save asked for by name."""
    stem, _ = os.path.splitext(os.path.basename(output))
    return SaveRequest(name=stem, dtype=dtype or "", format=format_for_output(output, format_name), **flags)


def check_save(save: SaveRequest, bound: BoundRecipe) -> None:
    """A save's dtype and layout checked before the merge reads a tensor: found only when the file is
    written, a bad one would leave a live merge standing unsaved."""
    if save.dtype:
        parse_output_dtype(save.dtype)
    output_layout([bound.sources[r] for r in bound.models], [bound.role(r) for r in bound.models], save.layout or None)


def save_and_log(
    recipe: Node | BoundRecipe,
    job: SaveJob,
    engine: EngineOptions | None,
    models_dir: str | None,
    history: Path | None,
    warn: Warn,
) -> tuple[MergeResult, HistoryRow | None]:
    """Write the merge to `job.target` and log its row in `history` (None: not logged)."""
    root = recipe.root if isinstance(recipe, BoundRecipe) else recipe
    save = replace(job.save, dtype=job.save.dtype or cast_dtype(root) or job.default_dtype)
    options = SaveOptions(
        output=job.target,
        dtype=parse_output_dtype(save.dtype),
        overwrite=save.overwrite,
        prune=save.prune,
        metadata=job.metadata,
        format=format_for_output(job.target, save.format),
        clamp=save.clamp,
        layout=save.layout or None,
    )
    record = dict(job.settings, save=asdict(save))
    return merge_and_log(recipe, options, engine, models_dir, history, record, warn, job.row_name)


@contextlib.contextmanager
def loaded_or_removed(path: str, fresh: bool, refresh: Callable[[], None]) -> Iterator[None]:
    """Save and load: when the host cannot load the merge just written to `path`, a file the save made
    anew (`fresh`) is removed again and the checkpoint list refreshed, so the failed merge leaves no file
    behind; a file written over one the user asked to overwrite stays. One clear error either way."""
    try:
        yield
    except Exception as e:
        fate = f"{os.path.basename(path)} stays"
        if fresh:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            refresh()
            fate = f"{os.path.basename(path)} was removed again"
        reason = str(e) if isinstance(e, HostPatchError) else f"{type(e).__name__}: {e}"
        raise HostPatchError(f"the WebUI could not load the saved merge ({reason}); {fate}") from e
