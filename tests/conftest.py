"""Shared fixtures: miniature checkpoints with real key names, written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lib_merge.io.synth import SynthSpec, write_synthetic


@pytest.fixture(autouse=True)
def _alloy_home(tmp_path_factory, monkeypatch):
    """Keep hash caches and user presets out of the real home folder."""
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path_factory.getbasetemp() / "alloy-home"))


class ModelFactory:
    """Writes miniature checkpoints on demand and remembers them for the session."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.made: dict[tuple, Path] = {}

    def __call__(self, name: str = "", **spec) -> Path:
        key = tuple(sorted(spec.items()))
        if key not in self.made:
            label = name or "m" + str(len(self.made))
            path = self.folder / f"{label}.safetensors"
            write_synthetic(str(path), SynthSpec(**spec))
            self.made[key] = path
        return self.made[key]


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> ModelFactory:
    return ModelFactory(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def sd1(models):
    """Three SD1 miniatures A, B, C (fp16, position_ids int64)."""
    return [models(f"sd1_{r}", arch="sd1", seed=s) for r, s in (("a", 1), ("b", 2), ("c", 3))]


@pytest.fixture(scope="session")
def sdxl(models):
    return [models(f"sdxl_{r}", arch="sdxl", seed=s) for r, s in (("a", 11), ("b", 12), ("c", 13))]


@pytest.fixture(scope="session")
def sd1_fp32(models):
    return [models(f"sd1f_{r}", arch="sd1", seed=s, dtype=torch.float32) for r, s in (("a", 21), ("b", 22), ("c", 23))]


def listdir(path: Path) -> set[str]:
    return set(os.listdir(path))


DOUBLE = Path(__file__).parent / "webui_double"


class WebUI:
    """The WebUI test double, loaded fresh, with model A selected and Alloy connected."""

    def __init__(self, root: Path, models_src: list[Path]):
        import shutil
        import sys

        for name in [m for m in sys.modules if m.split(".")[0] in ("modules", "modules_forge", "networks")]:
            del sys.modules[name]
        sys.path.insert(0, str(DOUBLE))
        import networks  # noqa: F401
        from modules import processing, script_callbacks, sd_models, sd_vae, shared

        from lib_merge.app.workbench import Workbench
        from lib_merge.host.a1111 import A1111Host, connect

        self.folder = root / "models" / "Stable-diffusion"
        self.folder.mkdir(parents=True)
        for name, src in zip(("model_a", "model_b", "model_c"), models_src, strict=True):
            shutil.copy(src, self.folder / f"{name}.safetensors")
        sd_models.model_path = str(self.folder)
        self.shared, self.sd_models, self.processing, self.sd_vae = shared, sd_models, processing, sd_vae
        self.script_callbacks = script_callbacks
        sd_models.list_models()
        shared.opts.data["sd_model_checkpoint"] = "model_a.safetensors"
        shared.opts.data["alloy_history_file"] = str(root / "history.csv")  # Alloy's option in Settings
        for option in ("outdir_txt2img_samples", "outdir_txt2img_grids"):  # images stay in the test's folder
            shared.opts.data[option] = str(root / "outputs" / option)
        self.host = A1111Host()
        self.workbench = Workbench(self.host)
        connect(self.workbench)
        shared.sd_model  # noqa: B018 - the WebUI loads the selected checkpoint at start-up

    def title(self, stem: str) -> str:
        return next(t for t in self.sd_models.checkpoints_list if t.startswith(stem))

    @property
    def model(self):
        return self.sd_models.model_data.sd_model

    def txt2img(self, prompt: str = "a cat", seed: int = 7):
        """A txt2img run as the WebUI's own tab makes it (not through Alloy)."""
        p = self.processing.StableDiffusionProcessingTxt2Img(
            prompt=prompt,
            negative_prompt="",
            steps=3,
            sampler_name="Euler",
            seed=seed,
            width=64,
            height=64,
            batch_size=1,
            n_iter=1,
            cfg_scale=7.0,
        )
        return self.processing.process_images(p)

    def close(self):
        import sys

        sys.path.remove(str(DOUBLE))
        for name in [m for m in sys.modules if m.split(".")[0] in ("modules", "modules_forge", "networks")]:
            del sys.modules[name]


@pytest.fixture
def webui(tmp_path, sd1):
    ui = WebUI(tmp_path, sd1)
    yield ui
    ui.close()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the tests' own (one per test process), stopped and removed at the end."""
    from postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()
