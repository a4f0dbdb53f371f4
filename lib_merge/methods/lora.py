"""lora(x, "file.safetensors", strength=…): a LoRA's weight changes baked into x, key by key.

The recipe holds a LoraRef (the file as written); binding turns it into the file's modules mapped
to the checkpoint's keys (lib_merge/lora), so at each key this function gets only that key's
modules and adds strength · ΔW. Keys no module of the LoRA touches stay x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from lib_merge.methods.registry import TEXT, Weight, merge_method


@dataclass(frozen=True)
class LoraRef:
    """A LoRA file named in a recipe; the sha256 is filled in when the recipe is bound."""

    path: str
    sha256: str | None = None

    @property
    def text(self) -> str:
        return self.path

    @property
    def identity_text(self) -> str:
        """What the recipe hash sees: the file's content, not its name."""
        return self.sha256 or self.path

    @classmethod
    def from_text(cls, text: str) -> LoraRef:
        return cls(text)


def _no_module_here(params: dict) -> int | None:
    return 0 if params["file"] is None else None


@merge_method("LoRA", "op", passthrough=_no_module_here)
def lora(
    x: torch.Tensor, *, file: Annotated[LoraRef, TEXT] = LoraRef(""), strength: Weight = 1.0, key: str
) -> torch.Tensor:
    """x + strength · ΔW of the LoRA's modules at this key (`file` is that key's share of the bound LoRA)."""
    return file.apply(x, strength)
