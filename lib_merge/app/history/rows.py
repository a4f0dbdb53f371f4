"""The rows of the merge history: one format for every surface."""

from __future__ import annotations

import json
from dataclasses import dataclass

COLUMNS = ("id", "time", "name", "recipe_hash", "models", "settings", "output", "recipe")


@dataclass
class RowDraft:
    """A row before the log gives it its id and time."""

    name: str
    recipe_hash: str
    models: str  # "A=base.safetensors [6ce0161689];B=..."
    settings: dict
    output: str  # saved path or "not saved"
    recipe: str


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
