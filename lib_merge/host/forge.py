"""Stable Diffusion WebUI Forge as an Alloy host, in "save and load" mode.

Forge splits a checkpoint into its own component modules with key conversions of its own
(diffusers-named VAE, split attention projections), so an in-place patch would need those
conversions mirrored. Instead a merge is written to the checkpoint folder and selected through
Forge's own checkpoint switch, which loads it at the next generation like any other file.
Everything else (checkpoint list, names, generation, API) is shared with the A1111 adapter.
"""

from __future__ import annotations

import os

from lib_merge.app.ports import MergeIdentity
from lib_merge.host.a1111 import A1111Host


class ForgeHost(A1111Host):
    name = "forge"
    can_patch = False

    def load_checkpoint(self, path: str) -> None:
        from modules import sd_models
        from modules_forge import main_entry

        info = self._entry_for(path)
        if info is None:
            sd_models.list_models()
            info = self._entry_for(path)
        main_entry.checkpoint_change(info.title)

    def _entry_for(self, path: str):
        from modules import sd_models

        target = os.path.abspath(path)
        return next((i for i in sd_models.checkpoints_list.values() if os.path.abspath(i.filename) == target), None)

    def loaded_file(self) -> str | None:
        from modules import sd_models, shared

        info = sd_models.get_closet_checkpoint_match(shared.opts.data.get("sd_model_checkpoint", ""))
        return os.path.abspath(info.filename) if info is not None else None

    def live_model(self):
        return None

    def before_patch(self) -> None:
        pass

    def skip_prefixes(self) -> tuple[str, ...]:
        return ()

    def set_identity(self, identity: MergeIdentity) -> None:
        pass  # the merge is a real file with its own entry

    def clear_identity(self) -> None:
        pass


def is_forge() -> bool:
    import importlib.util

    return importlib.util.find_spec("modules_forge") is not None
