"""The host without a WebUI: models are the files of one folder, merges are written to files.

It offers model files only (app/ports.py): no live model, no generation, no WebUI tab.
"""

from __future__ import annotations

import os

from lib_merge.app.ports import HostConfig
from lib_merge.errors import ModelNotFoundError, UnsafePathError
from lib_merge.paths import inside_folder

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt")


class FolderHost:
    name = "standalone"
    live = None  # merges go to files
    generation = None
    webui = None

    def __init__(self, models_dir: str, config: HostConfig | None = None):
        self.models_dir = os.path.abspath(models_dir)
        if not os.path.isdir(self.models_dir):
            raise ModelNotFoundError(f"models folder does not exist: {self.models_dir}")
        self._config = config or HostConfig()

    def config(self) -> HostConfig:
        return self._config

    def checkpoint_titles(self) -> list[str]:
        found = []
        for folder, dirs, files in os.walk(self.models_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.endswith(MODEL_EXTENSIONS) and ".alloy-tmp-" not in f:
                    found.append(os.path.relpath(os.path.join(folder, f), self.models_dir).replace(os.sep, "/"))
        return found

    def selected_checkpoint(self) -> str | None:
        return None  # no loaded model: the user picks model A

    def refresh_checkpoints(self) -> None:
        pass  # the folder is listed afresh each time

    def resolve_checkpoint(self, title: str) -> str:
        path = title if os.path.isabs(title) else os.path.join(self.models_dir, title)
        if not inside_folder(path, self.models_dir, follow_links=False):
            raise UnsafePathError(f"{title!r} points outside the models folder {self.models_dir}")
        if not os.path.isfile(path):
            raise ModelNotFoundError(f"model not found: {title!r} (looked in {self.models_dir})")
        return os.path.abspath(path)

    def save_folder(self) -> str:
        return self.models_dir

    def lora_folder(self) -> str:
        """<models>/Lora when there is one, else the models folder itself."""
        folder = os.path.join(self.models_dir, "Lora")
        return folder if os.path.isdir(folder) else self.models_dir

    def vae_folder(self) -> str:
        """<models>/VAE when there is one, else the models folder itself."""
        folder = os.path.join(self.models_dir, "VAE")
        return folder if os.path.isdir(folder) else self.models_dir

    def lora_preset_files(self) -> list[str]:
        return []

    def font_path(self) -> str | None:
        return None

    def supermerger_folders(self) -> list[str]:
        return []
