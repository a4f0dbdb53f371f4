"""The rows of the merge history: one format for every surface."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the history reads without torch: the CLI's `history` starts fast
    from lib_merge.recipe.form import MergeSettings, MethodSettings
    from lib_merge.recipe.hashed import HashedRecipe

COLUMNS = ("id", "time", "name", "recipe_hash", "models", "settings", "output", "recipe")
NOT_SAVED = "not saved"


def settings_record(
    form: MergeSettings | MethodSettings | None,
    *,
    save: object | None = None,
    device: str = "",
    **extra: object,
) -> dict:
    """The settings column, the same from every surface: the form's fields (a modern method's under
    "method"), then the save options, the device and what the surface adds (recipe_file, UI state)."""
    record: dict = form.record() if form is not None else {"recipe_edited": True}
    if save is not None:
        record["save"] = asdict(save) if is_dataclass(save) else dict(save)
    if device:
        record["device"] = device
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


@dataclass
class RowDraft:
    """A row before the log gives it its id and time."""

    name: str
    recipe_hash: str
    models: str  # "A=base.safetensors [6ce0161689];B=..."
    settings: dict
    output: str  # saved path or "not saved"
    recipe: str

    @classmethod
    def of(cls, recipe: HashedRecipe, settings: dict, output: str = NOT_SAVED, name: str = "") -> RowDraft:
        """The row of a merge; a saved one is named after its file unless a name is given."""
        if not name and output != NOT_SAVED:
            name = os.path.splitext(os.path.basename(output))[0]
        return cls(name, recipe.digest, recipe.models_column(), settings, output, recipe.text)


@dataclass
class HistoryRow:
    id: int
    time: str
    name: str
    recipe_hash: str
    models: str
    settings: dict
    output: str
    recipe: str

    def cells(self) -> list[str]:
        return [
            str(self.id),
            self.time,
            self.name,
            self.recipe_hash,
            self.models,
            json.dumps(self.settings, sort_keys=True, ensure_ascii=False),
            self.output,
            self.recipe,
        ]

    def text(self) -> str:
        return "\n".join(self.cells())
