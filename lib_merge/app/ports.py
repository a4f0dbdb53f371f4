"""What Alloy needs from a host (the WebUI, Forge, or none), as one small protocol.

The workbench (session.py) talks only to this protocol, so the merge, restore, save and
history logic is the same for every host and is tested against a test double.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from lib_merge.engine.live import PatchTarget


@dataclass
class HostConfig:
    """Alloy's options as the host's settings page (or the standalone defaults) give them."""

    cache_budget: str = "0"  # bytes as "auto", "0", or a number of GiB
    device: str = "cpu"
    compute_dtype: str = "fp32"
    history_file: str = ""  # empty: <user data>/history.csv
    save_dtype: str = "fp16"
    autoprune_folder: str = ""  # autoprune at start: a folder in the models folder (e.g. Autoprune); empty: off


@dataclass
class GenSettings:
    """txt2img settings for one generation; None leaves the host's (user's) value."""

    prompt: str | list[str] | None = None  # a list: one prompt per image of one batch (XYZ prompt batch)
    negative_prompt: str | None = None
    steps: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    subseed: int | None = None
    subseed_strength: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int | None = None
    n_iter: int | None = None
    enable_hr: bool | None = None
    hr_scale: float | None = None
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = None
    denoising_strength: float | None = None
    styles: list[str] | None = None
    override_settings: dict[str, Any] | None = None
    script_args: tuple | None = None  # the host's txt2img script inputs (ControlNet and the like)
    save_images: bool = True

    def overlay(self, overrides: GenSettings) -> GenSettings:
        """These settings with every non-empty field of `overrides` put on top."""
        merged = GenSettings(**self.__dict__)
        for key, value in overrides.__dict__.items():
            if value not in (None, "") and key != "save_images":
                setattr(merged, key, value)
        merged.save_images = overrides.save_images and self.save_images
        return merged


@dataclass
class GenResult:
    images: list[Any]  # PIL images
    infotext: str
    notes: list[str] = field(default_factory=list)


@dataclass
class MergeIdentity:
    """How a live merge presents itself to the host."""

    name: str  # the auto or custom name, no extension
    recipe_hash: str
    base_path: str  # model A's file
    metadata: dict[str, str] = field(default_factory=dict)


class Host(Protocol):
    name: str
    can_generate: bool
    can_patch: bool  # False: merges go to files (no loaded model)

    def config(self) -> HostConfig: ...

    def checkpoint_titles(self) -> list[str]: ...

    def selected_checkpoint(self) -> str | None:
        """The checkpoint file the user has selected, as a title of `checkpoint_titles` (Model A's default);
        while an Alloy merge is loaded, its model A. None when there is none."""
        ...

    def refresh_checkpoints(self) -> None: ...

    def resolve_checkpoint(self, title: str) -> str:
        """The file behind a title or name shown to the user; only files inside the model folders."""
        ...

    def save_folder(self) -> str: ...

    def lora_folder(self) -> str:
        """Where the user's LoRA files are (the WebUI's Lora folder)."""
        ...

    def vae_folder(self) -> str:
        """Where the user's VAE files are (the WebUI's VAE folder)."""
        ...

    def lora_preset_files(self) -> list[str]:
        """Other tools' LoRA block preset files to import (the LoRA Block Weight extension's lbwpresets.txt)."""
        ...

    def exclusive(self) -> AbstractContextManager:
        """Held while the live model changes or generates (the host's own job lock)."""
        ...

    def live_model(self) -> torch.nn.Module | PatchTarget | None:
        """The loaded model to patch in place: a module whose tensor names are the checkpoint's, or a
        map of checkpoint keys onto the host's own tensors; None for hosts that only write files."""
        ...

    def loaded_file(self) -> str | None:
        """The checkpoint file the live model was loaded from (ignoring Alloy's own identity)."""
        ...

    def load_checkpoint(self, path: str) -> None: ...

    def before_patch(self) -> None:
        """Make the live weights clean (for example, take a LoRA extension's delta out)."""
        ...

    def before_generate(self) -> None:
        """Bring the loaded model up to the user's checkpoint choice before Alloy generates (Forge defers
        loads to the next generation; its load ends a live merge through the model-loaded callback)."""
        ...

    def skip_prefixes(self) -> tuple[str, ...]:
        """Key prefixes the host keeps from elsewhere (an external VAE)."""
        ...

    def set_identity(self, identity: MergeIdentity) -> None: ...

    def clear_identity(self) -> None: ...

    def after_save(self, path: str) -> None: ...

    def generate(self, gen: GenSettings, extra_info: dict[str, str]) -> GenResult: ...

    def interrupt(self) -> None: ...

    def grid_folder(self) -> str:
        """Where XYZ grids go (the host's txt2img grid folder)."""
        ...

    def font_path(self) -> str | None:
        """A TrueType font for grid labels, when the host ships one."""
        ...

    def supermerger_folders(self) -> list[str]:
        """Folders of installed SuperMerger extensions (their mergehistory.csv may be imported)."""
        ...
