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


def build_model(state, dtype: torch.dtype, hijack: bool = True, requires_grad: bool = True) -> torch.nn.Module:
    """A real module tree with the checkpoint's names, text encoder under `.wrapped.` as the WebUI hijack does.

    `state`: a state dict, or (key, tensor) pairs streamed from a file (full-size models in the benchmarks)."""
    root = torch.nn.Module()
    for key, value in state.items() if isinstance(state, dict) else state:
        if hijack and key.startswith("cond_stage_model."):
            key = key.replace("cond_stage_model.", "cond_stage_model.wrapped.", 1)
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        if value.is_floating_point():
            module.register_parameter(leaf, torch.nn.Parameter(value.to(dtype).clone(), requires_grad=requires_grad))
        else:
            module.register_buffer(leaf, value.clone())
    return root


def write_lora(path, checkpoint, names, rank: int = 2, alpha: float | None = None, seed: int = 0) -> dict:
    """A kohya LoRA (LoCon for convs) for a miniature checkpoint: each named module gets up/down factors of
    `rank` that fit its target's shape there. Returns {module: target key}."""
    from safetensors.torch import save_file

    from lib_merge.io.source import SourceModel
    from lib_merge.lora.keymap import KeyMap

    source = SourceModel(str(checkpoint))
    try:
        shapes = source.shapes
    finally:
        source.close()
    keymap = KeyMap(shapes)
    generator = torch.Generator().manual_seed(seed)
    tensors, targets = {}, {}
    for name in names:
        target = keymap.target(name)
        assert target is not None, name
        shape = shapes[target.key]
        rows = target.rows[1] - target.rows[0] if target.rows else shape[0]
        if len(shape) == 4:
            down = torch.randn(rank, shape[1], *shape[2:], generator=generator)
            up = torch.randn(rows, rank, 1, 1, generator=generator)
        else:
            down = torch.randn(rank, shape[1], generator=generator)
            up = torch.randn(rows, rank, generator=generator)
        tensors[f"{name}.lora_down.weight"] = (down * 0.1).half()
        tensors[f"{name}.lora_up.weight"] = (up * 0.1).half()
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        targets[name] = target.key
    save_file(tensors, str(path))
    return targets


def table_rows(value, headers: list[str] | None = None) -> list[list]:
    """The rows of a table a handler gave: it must carry its headers (Gradio 3.41 shows 1, 2, … without them)."""
    assert isinstance(value, dict) and value["headers"], value
    if headers is not None:
        assert value["headers"] == headers
    return value["data"]
