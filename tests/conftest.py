"""Shared fixtures: miniature checkpoints with real key names, written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lib_merge.arch.synth import SynthSpec, write_synthetic


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
