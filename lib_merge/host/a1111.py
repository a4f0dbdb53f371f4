"""The AUTOMATIC1111 WebUI (v1.7–1.10) as an Alloy host; the WebUI internals it relies on are named where used.

Every WebUI module is imported inside the methods, at call time: this file imports without the
WebUI, and the tests run it against a double of the objects it touches.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import fields

import torch

from lib_merge.app.ports import GenSettings, HostConfig
from lib_merge.errors import ModelNotFoundError, UnsafePathError
from lib_merge.host.a1111_identity import MergeEntry, keep_listed
from lib_merge.host.a1111_txt2img import DEFAULT_GEN, TXT2IMG_ELEM_IDS, Txt2ImgRuns
from lib_merge.paths import inside_folder

__all__ = ["DEFAULT_GEN", "TXT2IMG_ELEM_IDS", "A1111Host", "connect"]

OPTION_PREFIX = "alloy_"


class A1111Host(MergeEntry, Txt2ImgRuns):
    """Every port in one object (app/ports.py): model files, the live model, generation, the txt2img tab."""

    name = "a1111"
    can_patch = True  # the live model is patched in place

    @property
    def live(self) -> A1111Host:
        return self

    @property
    def generation(self) -> A1111Host:
        return self

    @property
    def webui(self) -> A1111Host:
        return self

    def supermerger_folders(self) -> list[str]:
        """Installed extensions whose folder name says SuperMerger (it keeps mergehistory.csv there)."""
        return [path for path in _extension_folders() if "supermerger" in os.path.basename(path).lower()]

    def lora_preset_files(self) -> list[str]:
        """lbwpresets.txt of an installed LoRA Block Weight extension (in its scripts folder)."""
        found = [os.path.join(path, "scripts", "lbwpresets.txt") for path in _extension_folders()]
        return [path for path in found if os.path.isfile(path)]

    def __init__(self) -> None:
        self.components: dict[str, object] = {}  # txt2img components by elem_id, from after_component
        self.last_run: GenSettings | None = None  # the user's last txt2img run, from before_process
        self._init_entry()

    # -- options -----------------------------------------------------------------------------
    def config(self) -> HostConfig:
        from modules import shared

        defaults = HostConfig(cache_budget="auto")
        values = {
            f.name: shared.opts.data.get(OPTION_PREFIX + f.name, getattr(defaults, f.name)) for f in fields(HostConfig)
        }
        return HostConfig(
            **{k: v is True if isinstance(getattr(defaults, k), bool) else str(v) for k, v in values.items()}
        )

    # -- checkpoints -------------------------------------------------------------------------
    def model_folders(self) -> list[str]:
        """Where the WebUI lists checkpoints: models/Stable-diffusion, then A1111's and Forge's --ckpt-dir
        or Forge Neo's --ckpt-dirs (a list; Neo has no --ckpt-dir)."""
        from modules import sd_models, shared

        extra = [getattr(shared.cmd_opts, "ckpt_dir", None), *(getattr(shared.cmd_opts, "ckpt_dirs", None) or [])]
        return [sd_models.model_path, *(os.path.abspath(folder) for folder in extra if folder)]

    def checkpoint_titles(self) -> list[str]:
        from modules import sd_models

        return [t for t, info in sd_models.checkpoints_list.items() if info is not self._entry]

    def selected_checkpoint(self) -> str | None:
        from modules import sd_models, shared

        title = shared.opts.data.get("sd_model_checkpoint")
        info = sd_models.checkpoint_aliases.get(title) if title else None
        if info is not None and info is self._entry:  # the live merge: its model A
            info = self._base_entry
        return info.title if info is not None and info.title in sd_models.checkpoints_list else None

    def checkpoint_title(self, choice: str) -> str | None:
        from modules import sd_models

        info = sd_models.checkpoint_aliases.get(choice) or sd_models.get_closet_checkpoint_match(choice)
        if info is not None and info is self._entry:  # the live merge: its model A
            info = self._base_entry
        return info.title if info is not None and info.title in sd_models.checkpoints_list else None

    def refresh_checkpoints(self) -> None:
        from modules import sd_models

        sd_models.list_models()  # wrapped by connect(): the live merge stays listed

    def resolve_checkpoint(self, title: str) -> str:
        """Entries the WebUI lists are trusted as they are (symlinks included); any other name must
        lie inside the checkpoint folders."""
        from modules import sd_models

        info = sd_models.checkpoint_aliases.get(title) or sd_models.get_closet_checkpoint_match(title)
        if info is not None and info is self._entry:
            raise ModelNotFoundError(f"{title!r} is the live merge, not a file: choose the models it came from")
        if info is not None:
            path = os.path.abspath(info.filename)
        else:  # a path, or a name inside one of the folders (the first that has it)
            folders = self.model_folders()
            found = [os.path.abspath(os.path.join(folder, title)) for folder in folders]
            path = next((p for p in found if os.path.isfile(p)), found[0])
            if not any(inside_folder(path, folder, follow_links=False) for folder in folders):
                raise UnsafePathError(f"{title!r} points outside the WebUI's checkpoint folders")
        if not os.path.isfile(path):
            raise ModelNotFoundError(f"checkpoint not found: {title!r}")
        return path

    def vae_folder(self) -> str:
        """--vae-dir when it is a folder, else models/VAE (as the WebUI's VAE list looks)."""
        from modules import paths, shared

        given = getattr(shared.cmd_opts, "vae_dir", None)
        return given if given and os.path.isdir(given) else os.path.join(paths.models_path, "VAE")

    def lora_folder(self) -> str:
        from modules import paths, shared

        return getattr(shared.cmd_opts, "lora_dir", None) or os.path.join(paths.models_path, "Lora")

    def save_folder(self) -> str:
        """Where the WebUI's own Checkpoint Merger writes: --ckpt-dir when given, else models/Stable-diffusion
        (Forge Neo's too, whatever --ckpt-dirs lists)."""
        from modules import sd_models, shared

        given = getattr(shared.cmd_opts, "ckpt_dir", None)
        return os.path.abspath(given) if given else sd_models.model_path

    def grid_folder(self) -> str:
        from modules import shared

        return shared.opts.outdir_grids or shared.opts.outdir_txt2img_grids

    def font_path(self) -> str | None:
        try:
            from modules.paths_internal import roboto_ttf_file
        except ImportError:
            return None
        return roboto_ttf_file if os.path.isfile(roboto_ttf_file) else None

    # -- the live model ----------------------------------------------------------------------
    def _sd_model(self):
        from modules import sd_models

        return sd_models.model_data.sd_model

    def patch_target(self) -> torch.nn.Module | None:
        return self._sd_model()

    def loaded_file(self) -> str | None:
        model = self._sd_model()
        if model is None:
            return None
        info = self._base_entry if self.is_ours(model) else getattr(model, "sd_checkpoint_info", None)
        return os.path.abspath(info.filename) if info is not None else None

    def is_ours(self, model) -> bool:
        return self._entry is not None and getattr(model, "sd_checkpoint_info", None) is self._entry

    def load_checkpoint(self, path: str) -> None:
        from modules import sd_models

        info = next(
            (i for i in sd_models.checkpoints_list.values() if os.path.abspath(i.filename) == path), None
        ) or sd_models.CheckpointInfo(path)
        sd_models.reload_model_weights(info=info)

    def exclusive(self):
        """The WebUI's queue lock: no txt2img job runs while the live model changes."""
        try:
            from modules.call_queue import queue_lock
        except ImportError:
            return contextlib.nullcontext()
        return queue_lock

    def before_patch(self) -> None:
        """Take the built-in LoRA extension's delta out and drop its backups (docs/WEBUI.md §5)."""
        try:
            import networks
        except ImportError:
            return
        model = self._sd_model()
        with torch.no_grad():
            for module in model.modules():
                if (
                    getattr(module, "network_weights_backup", None) is not None
                    or getattr(module, "network_bias_backup", None) is not None
                ):
                    networks.network_restore_weights_from_backup(module)
            for module in model.modules():
                if hasattr(module, "network_current_names"):
                    networks.network_reset_cached_weight(module)

    def before_generate(self) -> None:
        pass  # a checkpoint choice loads at once in A1111

    def skip_prefixes(self) -> tuple[str, ...]:
        from modules import sd_vae

        return ("first_stage_model.",) if getattr(sd_vae, "loaded_vae_file", None) else ()

    # -- generation ----------------------------------------------------------------
    def before_process(self, p, workbench) -> None:
        """At the start of every txt2img run: the user's settings, and the live merge held when the run
        loads another checkpoint for itself (a1111_identity.py)."""
        self.capture_run(p)
        self.hold_for_run(p, workbench)


def connect(workbench) -> None:
    """Register the WebUI callbacks the workbench depends on (called at script load)."""
    from modules import script_callbacks

    host = workbench.host
    script_callbacks.on_model_loaded(lambda model: workbench.model_loaded(host.is_ours(model)))
    keep_listed(host)


def _extension_folders() -> list[str]:
    """The folders of the installed extensions, sorted by name."""
    from modules import paths

    root = os.path.join(paths.script_path, "extensions")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]
