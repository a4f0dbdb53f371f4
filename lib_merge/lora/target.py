"""Where one LoRA module lands in a checkpoint: a weight, a row slice of a fused weight, the first
input channels of a wider one, or a weight whose two halves diffusers stores the other way round."""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNET = "model.diffusion_model."


@dataclass(frozen=True)
class Target:
    key: str  # the checkpoint's weight key
    rows: tuple[int, int] | None = None  # a row slice of a fused q/k/v (or q/k/v/mlp) weight
    columns: int | None = None  # the first input channels only (an SD LoRA on an inpainting model's conv_in)
    swap_halves: bool = False  # diffusers' (scale, shift) rows of an adaLN weight held as (shift, scale)

    @property
    def bias_key(self) -> str:
        """The bias beside the weight ("….weight" → "….bias", "in_proj_weight" → "in_proj_bias")."""
        return self.key[: -len("weight")] + "bias"

    def in_checkpoint_order(self, delta: torch.Tensor) -> torch.Tensor:
        """A module's ΔW (or Δb) with its rows in the checkpoint's order: diffusers' norm_out (and SD3's last
        context norm) put scale before shift, the original models shift before scale."""
        if not self.swap_halves:
            return delta
        first, second = delta.chunk(2, dim=0)
        return torch.cat((second, first), dim=0)
