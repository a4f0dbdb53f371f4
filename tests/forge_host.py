"""The Forge double (tests/forge_double) started as Forge starts, with Alloy connected: shared by the tests
of the Forge host and of checkpoint overrides."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

from lib_merge.app.workbench import MergeRequest, Workbench
from lib_merge.host.a1111 import DEFAULT_GEN
from lib_merge.recipe.form import MergeSettings

FORGE = Path(__file__).parent / "forge_double"
NEO = Path(__file__).parent / "neo_double"  # Forge Neo: put before FORGE
DOUBLES = ("modules", "modules_forge", "networks", "backend", "huggingface_guess")


def _forget_doubles() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in DOUBLES]:
        del sys.modules[name]


class Forge:
    """The Forge double, started with model A selected and loaded, and Alloy connected."""

    def __init__(self, root: Path, models_src: list[Path], patch: bool = True, neo: bool = False):
        _forget_doubles()
        self.doubles = [str(FORGE), str(NEO)] if neo else [str(FORGE)]
        for double in self.doubles:
            sys.path.insert(0, double)
        from modules import processing, sd_models, shared
        from modules_forge import main_entry

        import lib_merge.host.forge as forge
        from lib_merge.host.a1111 import connect

        self.folder = root / "models" / "Stable-diffusion"
        self.folder.mkdir(parents=True)
        for name, src in zip(("model_a", "model_b", "model_c"), models_src, strict=True):
            shutil.copy(src, self.folder / f"{name}.safetensors")
        sd_models.model_path = sd_models.registry.model_path = str(self.folder)
        self.shared, self.sd_models, self.processing, self.main_entry = shared, sd_models, processing, main_entry
        sd_models.list_models()
        shared.opts.data["sd_model_checkpoint"] = "model_a.safetensors"
        shared.opts.data["alloy_history_file"] = str(root / "history.csv")
        main_entry.refresh_model_loading_parameters()
        if not neo:
            sd_models.forge_model_reload()  # Forge loads the selected checkpoint at start-up; Neo at the first run
        if not patch:
            forge.exposes_component_modules = lambda: False
        self.host = forge.ForgeHost()
        self.workbench = Workbench(self.host)
        connect(self.workbench)

    def title(self, stem: str) -> str:
        return next(t for t in self.sd_models.checkpoints_list if t.startswith(stem))

    @property
    def model(self):
        return self.sd_models.model_data.sd_model

    def gen(self, prompt: str = "a cat", seed: int = 7):
        gen = dataclasses.replace(
            DEFAULT_GEN, prompt=prompt, steps=2, seed=seed, width=64, height=64, save_images=False
        )
        return self.workbench.generate(gen)

    def image(self, prompt: str = "a cat") -> np.ndarray:
        return np.asarray(self.gen(prompt).images[0])

    def merge(self, alpha: float = 0.4, **kw):
        settings = MergeSettings(self.title("model_a"), self.title("model_b"), "weighted_sum", alpha=alpha)
        return self.workbench.merge(MergeRequest(settings=settings, **kw))

    def choose(self, stem: str) -> None:
        """The user picks a checkpoint in Forge's dropdown (Neo's passes the UI preset too)."""
        preset = (self.shared.opts.data.get("forge_preset"),) if "forge_preset" in self.shared.opts.data else ()
        self.main_entry.checkpoint_change(self.title(stem), *preset)

    def close(self) -> None:
        import lib_merge.host.forge as forge

        for double in self.doubles:
            sys.path.remove(double)
        _forget_doubles()
        forge.exposes_component_modules = EXPOSES


import lib_merge.host.forge as _forge  # noqa: E402

EXPOSES = _forge.exposes_component_modules
