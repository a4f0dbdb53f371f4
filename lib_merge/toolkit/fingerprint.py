"""Fingerprints of a checkpoint: the model toolkit's 4-digit numbers (SD1/SD2), a hash of each component's
fp16 bytes (equal for fp32 and fp16 copies of the same weights), and the WebUI's file hashes.

Toolkit metric (docs/FORMULAS.md §11): m = Σ (sigmoid(fp16-rounded x) − 0.5) over a component's keys,
n = int(|m / b − 1| · k), folded below 10000 by steps of 5000, printed as 4 digits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_merge.io.hashing import file_sha256, legacy_hash
from lib_merge.io.source import SourceModel
from lib_merge.toolkit.layout import component_file

# component -> (b, k) of the toolkit metric
_METRIC = {
    "unet": (-6131.5400, 10000),
    "vae": (17870.7051, 10000),
    "clip_l": (-2097.8596, 1000000),
    "clip_h": (-8757.5630, 10000),
}
_SHOWN = {"unet": "UNET", "vae": "VAE", "clip_l": "CLIP", "clip_h": "CLIP"}
# (component, number) -> what it is
KNOWN = {
    ("vae", 0): "SD-v1 VAE",
    ("vae", 869): "SD-v2 VAE",
    ("vae", 2982): "NAI VAE",
    ("vae", 155): "WD-VAE-v1",
    ("vae", 41): "WD-VAE-v2",
    ("clip_l", 0): "SD-v1 CLIP",
    ("clip_h", 1141): "SD-v2 CLIP",
    ("clip_h", 2543): "WD-v1-4 CLIP",
}


def metric_number(total: float, component: str) -> int:
    b, k = _METRIC[component]
    n = int(abs(total / b - 1) * k)
    while n >= 10000:
        n -= 5000
    return n


def known_as(component: str, number: int) -> str | None:
    """The known model a number stands for (within ±1)."""
    for delta in (0, -1, 1):
        name = KNOWN.get((component, number + delta))
        if name:
            return name
    return None


def _counts_for_metric(component: str, key: str) -> bool:
    """Which keys of a component (prefix removed) the toolkit metric sums."""
    if component == "vae":
        return "encoder." in key or "decoder." in key
    if component in ("clip_l", "clip_h"):
        return "mlp." in key and ".23." not in key
    return component == "unet"


@dataclass
class Fingerprint:
    file: str
    sha256: str
    short_hash: str  # the WebUI's 10 hex
    legacy_hash: str  # the WebUI's old 8 hex
    architecture: str
    numbers: dict[str, int | None] = field(default_factory=dict)  # unet, vae, clip: None when absent
    components: dict[str, str] = field(default_factory=dict)  # component -> 12 hex of its fp16 bytes

    def lines(self) -> list[str]:
        out = [
            f"file: {self.file}",
            f"sha256: {self.sha256} (short {self.short_hash}, legacy {self.legacy_hash})",
            f"architecture: {self.architecture}",
        ]
        if self.numbers:
            parts = []
            for name, n in self.numbers.items():
                shown = "----" if n is None else f"{n:04d}"
                label = known_as(name, n) if n is not None else None
                parts.append(f"{_SHOWN[name]} {shown}" + (f" = {label}" if label else ""))
            out.append("toolkit: " + ", ".join(parts))
        out.append("components: " + ", ".join(f"{k} {v}" for k, v in self.components.items()))
        return out


def _fp16_bytes(tensor: torch.Tensor) -> bytes:
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float16)
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(path: str, progress: Callable[[int, int], None] | None = None) -> Fingerprint:
    """All three fingerprints, reading each tensor once."""
    source = SourceModel(path)
    try:
        parts = _components(source)
        hashes: dict[str, str] = {}
        sums: dict[str, float] = {}
        total = sum(len(keys) for keys in parts.values())
        done = 0
        for name, keys in parts.items():  # keys: (key in the file, key within the component), sorted by the latter
            digest = hashlib.sha256()
            for key, bare in keys:
                try:  # a view of the file's bytes, dropped from this process after use
                    tensor = source.view(key)
                    digest.update(bare.encode() + b"\0" + _fp16_bytes(tensor))
                    if name in _METRIC and tensor.is_floating_point() and _counts_for_metric(name, bare):
                        rounded = tensor.to(torch.float16).to(torch.float32)
                        sums[name] = sums.get(name, 0.0) + float((torch.sigmoid(rounded) - 0.5).double().sum())
                finally:
                    source.release(key)
                done += 1
                if progress is not None:
                    progress(done, total)
            hashes[name] = digest.hexdigest()[:12]
        arch_id = source.arch.id
        numbers: dict[str, int | None] = {}
        if arch_id in ("sd1", "sd2", "sdxl", "unknown"):
            clip = "clip_h" if arch_id == "sd2" or "clip_h" in parts else "clip_l"
            for name in ("unet", "vae", clip):
                meaningful = name in sums and not (arch_id == "sdxl" and name != "vae")
                numbers[name] = metric_number(sums[name], name) if meaningful else None
        sha = file_sha256(source.path)
        label = source.arch.label if source.arch.arch else _component_label(source)
        return Fingerprint(source.path, sha, sha[:10], legacy_hash(source.path), label, numbers, hashes)
    finally:
        source.close()


def _components(source: SourceModel) -> dict[str, list[tuple[str, str]]]:
    """Component -> its (key, key without the component's prefix), sorted by the latter."""
    arch = source.arch.arch
    parts: dict[str, list[tuple[str, str]]] = {}
    if arch is not None:
        for key in source.keys:
            name = arch.component_of(key)
            if name is not None:
                parts.setdefault(name, []).append((key, key[len(arch.components[name]) :]))
    else:
        found = component_file(source.shapes)
        if found is not None:
            parts[found.component] = [(k, k) for k in source.keys]
    return {name: sorted(keys, key=lambda pair: pair[1]) for name, keys in parts.items()}


def _component_label(source: SourceModel) -> str:
    found = component_file(source.shapes)
    return f"{found.component} component file" if found else "unknown"
