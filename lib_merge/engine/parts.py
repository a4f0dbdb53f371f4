"""A checkpoint tensor that the host keeps as several tensors, or widened after loading.

Forge splits some keys when it loads a checkpoint: a text encoder's fused q/k/v projection becomes
three row blocks, a text projection is stored transposed. A live merge still computes the
checkpoint's tensor; this object reads it back in the checkpoint's layout (for backups and
comparisons) and writes a result into every part. Forge also widens a few tensors after loading
(the text encoder's embeddings, stored in fp16, go to fp32 at the first prompt): a result is rounded
to the dtype the host loaded them in (`via`) before it is written, as loading it from a file would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Part:
    tensor: torch.Tensor  # the host's own tensor
    rows: tuple[int, int] | None = None  # the checkpoint rows it holds; None: all of them
    transposed: bool = False  # it holds those rows transposed

    def of(self, whole: torch.Tensor) -> torch.Tensor:
        """The view of a checkpoint-shaped tensor that this part holds."""
        block = whole[self.rows[0] : self.rows[1]] if self.rows else whole
        return block.t() if self.transposed else block


class StoredParts:
    """Quacks like the tensor a live merge patches: shape, dtype, device, detach() and copy_()."""

    def __init__(self, parts: list[Part], shape: tuple[int, ...], via: torch.dtype | None = None):
        self.parts = parts
        self.shape = torch.Size(shape)
        self.via = via
        self.dtype = parts[0].tensor.dtype
        self.device = parts[0].tensor.device

    def numel(self) -> int:
        return self.shape.numel()

    def element_size(self) -> int:
        return self.parts[0].tensor.element_size()

    def is_contiguous(self) -> bool:
        return False

    def is_inference(self) -> bool:
        return any(part.tensor.is_inference() for part in self.parts)

    def data_ptr(self) -> int:
        return 0  # no single storage: never the result's own

    def detach(self) -> torch.Tensor:
        """The checkpoint-shaped value, assembled from the parts."""
        whole = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        for part in self.parts:
            part.of(whole).copy_(part.tensor.detach())
        return whole

    def copy_(self, value: torch.Tensor) -> StoredParts:
        if self.via is not None:
            value = value.to(self.via)
        for part in self.parts:
            part.tensor.copy_(part.of(value))
        return self
