"""Small helpers for tests: load a file whole with the safetensors library (the reference reader)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file


def load(path: Path | str) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def metadata(path: Path | str) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}
