"""The requests of the LoRA file jobs (merge LoRAs, extract one): their fields and defaults are the one
source every surface reads, the CLI's help included, so this module imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class LoraMergeRequest:
    """LoRAs of the LoRA folder merged into one new LoRA there."""

    loras: list[str]  # "name:strength[:blocks]" lines
    method: str = "concat"  # or "svd"
    rank: int | None = None  # svd: a fixed rank, else by energy
    energy: float = 0.99
    clamp: float = 1.0  # svd: quantile to clamp up/down to; 1 = off
    name: str = ""  # the new LoRA's file name; empty: an automatic one
    dtype: str = "fp16"
    overwrite: bool = False
    max_rank: int = 128  # svd by energy: the cap
    full_svd: bool = False  # svd: the full SVD instead of the randomized one
    seed: int = 0  # svd: the randomized SVD's seed


@dataclass
class LoraExtractRequest:
    """A LoRA extracted from two checkpoints (titles or files), written to the LoRA folder."""

    a: str  # the fine-tune
    b: str  # its base
    rank: int = 32
    conv_rank: int | None = None  # None: as rank; 0: no 3×3 convolutions
    full_svd: bool = False
    name: str = ""
    dtype: str = "fp16"
    overwrite: bool = False
    energy: float | None = None  # instead of rank: keep this share of the energy
    ratio: float | None = None  # instead of rank: keep singular values ≥ ratio · the largest
    max_rank: int = 128  # the cap of energy and ratio
    alpha: float = 1.0  # ΔW = alpha·A − beta·B
    beta: float = 1.0
    network_alpha: float | None = None  # the alpha written; None: the rank (scale 1)
    te_threshold: float = 1e-4  # a text encoder whose largest |ΔW| is at most this is left out
    clamp: float = 1.0  # quantile of |up, down| to clamp to; 1 = off
    seed: int = 0  # the randomized SVD's seed


def default_of(request: type, name: str) -> object:
    """A request field's default, for a surface's help text."""
    return {f.name: f.default for f in fields(request)}[name]
