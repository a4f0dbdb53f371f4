"""Writing a LoRA: kohya keys (`lora_up`, `lora_down`, `alpha`), the metadata LoRA tools read
(ss_*, modelspec, the additional-networks hashes) and Alloy's own recipe, through a temporary file.

The additional-networks hashes are computed as that extension and kohya's scripts do: over the file
as it would be written with only the `ss_*` metadata, so later user metadata does not change them
(`sshs_model_hash`: sha256 of the bytes after the header; `sshs_legacy_hash`: the first 8 hex of
the sha256 of 64 KiB at offset 1 MiB).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import save as safetensors_bytes

from lib_merge import __version__
from lib_merge.arch.modelspec import modelspec_fields
from lib_merge.io.dtypes import output_dtype_name
from lib_merge.io.tempfiles import check_new_output, write_file

_BASE_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}


@dataclass
class OutModule:
    """One module of the output: ΔW = (alpha / rank) · up ⊗ down, plus an optional bias change."""

    up: torch.Tensor
    down: torch.Tensor
    alpha: float
    bias: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def spatial(self) -> bool:
        return self.down.dim() == 4 and self.down.shape[2] * self.down.shape[3] > 1


@dataclass
class LoraBuild:
    """A LoRA made by Alloy, before writing: its modules, the base it is for, and how it was made."""

    modules: dict[str, OutModule]
    arch_id: str
    prediction: str = "epsilon"
    recipe: dict = field(default_factory=dict)  # alloy_lora_recipe: inputs, strengths, method, rank rule
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the files it was made from (never overwritten)

    def tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, m in sorted(self.modules.items()):
            out[f"{name}.lora_up.weight"] = m.up.to(dtype).contiguous()
            out[f"{name}.lora_down.weight"] = m.down.to(dtype).contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(m.alpha), dtype=dtype)
            if m.bias is not None:
                out[f"{name}.bias"] = m.bias.to(dtype).contiguous()
        return out

    def recipe_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe, sort_keys=True).encode()).hexdigest()


@dataclass
class WrittenLora:
    path: str
    recipe_hash: str
    metadata: dict[str, str]
    modules: int


def network_sizes(modules: dict[str, OutModule]) -> dict[str, str]:
    """ss_network_dim/alpha: the largest rank and alpha of the linear modules (of all when there are
    none); ss_network_args gets conv_dim/conv_alpha of the spatial convolutions."""
    linear = [m for m in modules.values() if not m.spatial] or list(modules.values())
    spatial = [m for m in modules.values() if m.spatial]
    sizes = {
        "ss_network_dim": str(max(m.rank for m in linear)),
        "ss_network_alpha": str(float(max(m.alpha for m in linear))),
    }
    if spatial:
        conv = {"conv_dim": str(max(m.rank for m in spatial)), "conv_alpha": str(float(max(m.alpha for m in spatial)))}
        sizes["ss_network_args"] = json.dumps(conv)
    return sizes


def training_metadata(build: LoraBuild, output: str, dtype: torch.dtype) -> dict[str, str]:
    """The ss_* fields: what LoRA tools read to know the network and its base."""
    version = _BASE_VERSION.get(build.arch_id, build.arch_id)
    if build.arch_id == "sd2" and build.prediction.startswith("v"):
        version = "sd_v2_768_v"
    return {
        "ss_network_module": "networks.lora",
        **network_sizes(build.modules),
        "ss_base_model_version": version,
        "ss_v2": str(build.arch_id == "sd2"),
        "ss_output_name": os.path.splitext(os.path.basename(output))[0],
        "ss_mixed_precision": output_dtype_name(dtype),
    }


def addnet_hashes(tensors: dict[str, torch.Tensor], ss_metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) of the file written with the ss_* metadata only."""
    data = safetensors_bytes(tensors, ss_metadata)
    header = 8 + int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(memoryview(data)[header:]).hexdigest()
    legacy = hashlib.sha256(memoryview(data)[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy


def write_lora(build: LoraBuild, output: str, dtype: torch.dtype, overwrite: bool = False) -> WrittenLora:
    """The LoRA at `output`, published whole or not at all; without `overwrite` an existing file stays."""
    check_new_output(output, build.sources, overwrite, writes="safetensors")
    tensors = build.tensors(dtype)
    ss = training_metadata(build, output, dtype)
    model_hash, legacy = addnet_hashes(tensors, ss)
    recipe_hash = build.recipe_hash()
    metadata = {
        "format": "pt",
        **ss,
        **modelspec_fields(build.arch_id, build.prediction, output, model_hash, kind="/lora"),
        "alloy_version": __version__,
        "alloy_lora_recipe": json.dumps(build.recipe, sort_keys=True),
        "alloy_lora_recipe_hash": recipe_hash,
        "sshs_model_hash": model_hash,
        "sshs_legacy_hash": legacy,
    }
    data = safetensors_bytes(tensors, metadata)
    path = write_file(output, lambda f: f.write(data), overwrite)
    return WrittenLora(path, recipe_hash, metadata, len(build.modules))
