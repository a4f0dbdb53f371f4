"""A stand-in WebUI for the live benchmarks: a real torch module holding model A, no generation cost.

The module has the checkpoint's names with the text encoder under `.wrapped.` (as the WebUI's
hijack puts it), parameters in the WebUI's dtype (tests/helpers.build_model).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import build_model  # noqa: E402

from lib_merge.app.ports import GenResult, GenSettings, HostConfig  # noqa: E402


def load_live_module(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    """tests/helpers.build_model fed key by key from the file, so the build holds no second copy."""
    with safe_open(str(path), "pt") as f:
        module = build_model(((key, f.get_tensor(key)) for key in f.keys()), dtype)
    trim_heap()
    return module


def trim_heap() -> None:
    """Hand freed heap pages back to the system, so RSS shows what is really held."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class StubHost:
    """Patches the module in memory; generation is a constant 8×8 image (its cost is not measured). It is
    its own live model and generation port (lib_merge/app/ports.py)."""

    name = "bench"
    can_patch = True

    def __init__(self, folder: Path, module: torch.nn.Module, a_name: str, data: Path, cache_budget: str):
        self.folder, self.module, self.data, self.cache_budget = folder, module, data, cache_budget
        self.path = str(folder / a_name)

    @property
    def live(self):
        return self

    @property
    def generation(self):
        return self

    @property
    def webui(self):
        return None

    def config(self) -> HostConfig:
        return HostConfig(history_file=str(self.data / "history.csv"), cache_budget=self.cache_budget)

    # -- model files
    def checkpoint_titles(self) -> list[str]:
        return [p.name for p in self.folder.glob("*.safetensors")]

    def selected_checkpoint(self) -> str | None:
        return None

    def refresh_checkpoints(self) -> None:
        pass

    def resolve_checkpoint(self, title: str) -> str:
        return str(self.folder / title)

    def save_folder(self) -> str:
        return str(self.folder)

    def lora_folder(self) -> str:
        return str(self.data)

    def vae_folder(self) -> str:
        return str(self.data)

    def lora_preset_files(self) -> list[str]:
        return []

    def supermerger_folders(self) -> list[str]:
        return []

    def font_path(self) -> None:
        return None

    # -- the live model
    def exclusive(self):
        return contextlib.nullcontext()

    def patch_target(self):
        return self.module

    def loaded_file(self) -> str:
        return self.path

    def load_checkpoint(self, path: str) -> None:
        raise AssertionError("the bench keeps model A loaded")

    def before_patch(self) -> None:
        pass

    def skip_prefixes(self) -> tuple[str, ...]:
        return ()

    def set_identity(self, identity) -> None:
        pass

    def clear_identity(self) -> None:
        pass

    # -- generation
    def base_settings(self) -> GenSettings:
        return GenSettings(prompt="", steps=1, width=8, height=8, seed=1)

    def before_generate(self) -> None:
        pass

    def generate(self, gen, extra_info) -> GenResult:
        return GenResult([Image.new("RGB", (8, 8)) for _ in range(max(1, gen.batch_size or 1))], "")

    def sampler_names(self) -> list[str]:
        return []

    def interrupt(self) -> None:
        pass

    def grid_folder(self) -> str:
        return str(self.data)
