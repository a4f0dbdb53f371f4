"""What Alloy needs from a host (the WebUI, Forge, ComfyUI, or none), as small ports.

A host offers its model files (required) and, when it has them, a live model to patch, generation,
and WebUI components (each `None` when not offered). The Workbench and the UI ask for a port
instead of probing attributes, so a new host implements only what it has; docs/ARCHITECTURE.md
has the table. The merge, restore, save and history logic is the same for every host and is tested
against test doubles.
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
    fetch_scorer_models: bool = False  # Optimize may fetch its built-in scorers' public weights once


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


class ModelFiles(Protocol):
    """The host's files (required): checkpoints by the titles the user sees, and the folders Alloy writes to."""

    def checkpoint_titles(self) -> list[str]: ...

    def selected_checkpoint(self) -> str | None:
        """The checkpoint file the user has selected, as a title of `checkpoint_titles` (Model A's default);
        while an Alloy merge is loaded, its model A. None when there is none."""
        ...

    def refresh_checkpoints(self) -> None:
        """List the checkpoint files again (after a save, the new file is among them)."""
        ...

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

    def supermerger_folders(self) -> list[str]:
        """Folders of installed SuperMerger extensions (their mergehistory.csv may be imported)."""
        ...

    def font_path(self) -> str | None:
        """A TrueType font for grid and chart labels, when the host ships one."""
        ...


class LiveModel(Protocol):
    """The loaded model (optional): without it, merges go to files and nothing is loaded."""

    can_patch: bool  # False: the model is loaded from files only ("save and load": merges are written, then loaded)

    def exclusive(self) -> AbstractContextManager:
        """Held while the live model changes or generates (the host's own job lock)."""
        ...

    def loaded_file(self) -> str | None:
        """The checkpoint file the live model was loaded from (ignoring Alloy's own identity)."""
        ...

    def load_checkpoint(self, path: str) -> None: ...

    def patch_target(self) -> torch.nn.Module | PatchTarget | None:
        """The loaded model to patch in place: a module whose tensor names are the checkpoint's, or a
        map of checkpoint keys onto the host's own tensors."""
        ...

    def before_patch(self) -> None:
        """Make the live weights clean (for example, take a LoRA extension's delta out)."""
        ...

    def skip_prefixes(self) -> tuple[str, ...]:
        """Key prefixes the host keeps from elsewhere (an external VAE)."""
        ...

    def set_identity(self, identity: MergeIdentity) -> None: ...

    def clear_identity(self) -> None: ...


class Generation(Protocol):
    """txt2img (optional): without it, the Gen buttons and XYZ plots are not offered."""

    def base_settings(self) -> GenSettings:
        """What a generation starts from before Alloy's overrides (the WebUI's last txt2img run, or defaults)."""
        ...

    def before_generate(self) -> None:
        """Bring the loaded model up to the user's checkpoint choice before Alloy generates (Forge defers
        loads to the next generation; its load ends a live merge through the model-loaded callback)."""
        ...

    def generate(self, gen: GenSettings, extra_info: dict[str, str]) -> GenResult: ...

    def interrupt(self) -> None: ...

    def sampler_names(self) -> list[str]:
        """The sampler names txt2img takes (empty: the host does not say); the WebUI replaces an unknown one
        with its default instead of refusing it."""
        ...

    def grid_folder(self) -> str:
        """Where XYZ grids go (the host's txt2img grid folder)."""
        ...


class WebUIIntegration(Protocol):
    """The WebUI's own txt2img tab (optional): its components feed Alloy's Gen button and "Get from prompt"."""

    components: dict[str, object]  # txt2img components by elem_id

    def gen_components(self) -> tuple[list[str], list[object], list[str]]:
        """(GenSettings fields, their txt2img components, elem_ids not found) for the Gen button's inputs."""
        ...

    def script_components(self) -> list[object]:
        """The inputs of every txt2img script (ControlNet and the like), as the txt2img button gets them."""
        ...

    def checkpoint_title(self, choice: str) -> str | None:
        """The title of `checkpoint_titles` that a value of the WebUI's checkpoint dropdown names (a title, or
        the file name Forge and Forge Neo list); model A while that is the live merge; None for no file."""
        ...


class Host(ModelFiles, Protocol):
    """A host: its model files (the host object itself), its options, and the optional ports (None: not offered)."""

    name: str

    def config(self) -> HostConfig: ...

    @property
    def live(self) -> LiveModel | None: ...

    @property
    def generation(self) -> Generation | None: ...

    @property
    def webui(self) -> WebUIIntegration | None: ...


def patchable(host: Host) -> LiveModel | None:
    """The host's live model when a merge can be written into it in place; None: merges go to files."""
    live = host.live
    return live if live is not None and live.can_patch else None
