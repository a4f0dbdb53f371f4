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


def build_model(state: dict[str, torch.Tensor], dtype: torch.dtype, hijack: bool = True) -> torch.nn.Module:
    """A real module tree with the checkpoint's names, text encoder under `.wrapped.` as the WebUI hijack does."""
    root = torch.nn.Module()
    for key, value in state.items():
        if hijack and key.startswith("cond_stage_model."):
            key = key.replace("cond_stage_model.", "cond_stage_model.wrapped.", 1)
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        if value.is_floating_point():
            module.register_parameter(leaf, torch.nn.Parameter(value.to(dtype).clone(), requires_grad=True))
        else:
            module.register_buffer(leaf, value.clone())
    return root
