"""What the surfaces ask of the Workbench, and what it answers: plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from lib_merge.app.lora_requests import LoraExtractRequest, LoraMergeRequest
from lib_merge.recipe.form import MergeSettings, MethodSettings
from lib_merge.recipe.hashed import CarriesRecipe, HashedRecipe
from lib_merge.recipe.nodes import Node

__all__ = ["LoraExtractRequest", "LoraMergeRequest"]  # re-exported: the LoRA file jobs' requests


@dataclass
class SaveRequest:
    name: str = ""  # custom file name; empty: the automatic name
    dtype: str = ""  # empty: the recipe's outermost cast, else the host's save dtype (fp16)
    format: str = "safetensors"
    prune: bool = True
    overwrite: bool = False
    clamp: bool = False  # fp8 dtypes: clamp values beyond the format's range instead of refusing the key
    layout: str = ""  # Flux: "single-file", "bfl" or "diffusers" (arch.layouts); empty: the inputs' own


@dataclass
class MergeRequest:
    """One merge: a form (mode settings or a modern method), a typed recipe text, or a recipe node."""

    settings: MergeSettings | MethodSettings | None = None
    recipe: str | None = None  # recipe text (typed or edited by hand) instead of settings
    save: SaveRequest | None = None  # also write the merge to a file
    ui: dict = field(default_factory=dict)  # further UI settings to log in history
    wait: bool = True  # False: fail at once when another merge holds the live model
    root: Node | None = None  # a recipe the caller built (an XYZ cell), used as it is
    log: bool = True  # False: the caller writes the row (a study's trial, once it is scored)


@dataclass
class LoraBakeRequest:
    """LoRAs baked into the loaded model (onto the live merge, if there is one) or into `model`."""

    loras: list[str]  # "name:strength[:blocks]" lines
    model: str | None = None  # a checkpoint title instead of the loaded model (the standalone app)
    save: SaveRequest | None = None
    wait: bool = True


@dataclass
class LoraJob:
    """A new LoRA file the Workbench writes: what the status line says, its name, and the files it reads."""

    stage: str
    name: str
    dtype: str
    overwrite: bool
    sources: list[str]


@dataclass
class LoraOutcome:
    path: str
    message: str


@dataclass
class MergeOutcome(CarriesRecipe):
    name: str
    recipe: HashedRecipe
    history_id: int
    seconds: float
    path: str | None
    message: str
    merged: bool = True  # False: the loaded model was this merge already, nothing was done


@dataclass
class LiveMerge(CarriesRecipe):
    """The merge the host has loaded now."""

    name: str
    recipe: HashedRecipe
    history_id: int
    base_path: str
    path: str | None = None  # the file, on hosts that load merges from files (save and load)
