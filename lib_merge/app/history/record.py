"""A merge into a file with its history row: the row is promised before the file takes its name
and logged right after, so every published merge gets its row even when the process is killed.

The CLI and the Workbench both save through here, so their rows have one format."""

from __future__ import annotations

from pathlib import Path

from lib_merge.app.history.log import Warn, try_append_history
from lib_merge.app.history.pending import announce, settle
from lib_merge.app.history.rows import HistoryRow, RowDraft
from lib_merge.engine.bind import BoundRecipe
from lib_merge.engine.options import EngineOptions
from lib_merge.engine.to_file import MergeResult, SaveOptions, merge_to_file
from lib_merge.recipe.nodes import Node


def merge_and_log(
    recipe: Node | BoundRecipe,
    save: SaveOptions,
    engine: EngineOptions | None,
    models_dir: str | None,
    history: Path | None,
    settings: dict,
    warn: Warn,
    name: str = "",
) -> tuple[MergeResult, HistoryRow | None]:
    """`merge_to_file`, then its row (`settings` as the settings column) in `history` (None: not
    logged). A history that cannot be written only warns: the merge stands."""
    if history is None:
        return merge_to_file(recipe, save, engine, models_dir), None
    promised: list[tuple[RowDraft, Path | None]] = []

    def draft_of(result: MergeResult) -> RowDraft:
        return RowDraft.of(result.recipe, settings, result.path, name)

    def promise(result: MergeResult, identity: tuple[int, int]) -> None:
        draft = draft_of(result)
        try:
            note = announce(history, draft, identity)
        except OSError:  # without the note only a kill in the next instant loses the row
            note = None
        promised.append((draft, note))

    try:
        result = merge_to_file(recipe, save, engine, models_dir, promise)
    except BaseException:
        settle(promised[0][1] if promised else None)
        raise
    draft, note = promised[0] if promised else (draft_of(result), None)
    row = try_append_history(draft, history, warn)
    settle(note)
    return result, row
