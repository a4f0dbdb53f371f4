"""Inputs that a many-model method reads a slice at a time, so its memory does not grow with their count.

A method declared with ``streams=True`` gets each input either as a tensor (inside a larger tree, or
called directly) or as an Operand the engine made over a model file, which reads a slice from the
file when asked. ``operands`` wraps the tensors, so the method reads both one way: a fresh fp32 copy
of a flat slice. The method's own full-size buffers (its result, a threshold's magnitudes) are the
size of one input, whatever the count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

# fp32 elements of all inputs' slices together (16 MiB), so 64 inputs hold no more than 16 do.
STREAM_ELEMENTS = 1 << 22
MAX_SLICE = 1 << 18  # per input: 1 MiB of fp32, a few torch calls per MiB
MIN_SLICE = 1 << 12


class Operand:
    """One input of one key, read as fp32 slices of its flat elements."""

    def __init__(self, tensor: torch.Tensor, reader: Callable[[int, int], torch.Tensor] | None = None):
        self.flat = tensor.reshape(-1)
        self.shape = tuple(tensor.shape)
        # Reads elements [start, end) from the tensor's file into memory of their own (engine/streamed.py).
        # Mapped pages would count as the process's own memory; a read slice is gone with its copy.
        self.reader = reader

    @property
    def numel(self) -> int:
        return self.flat.numel()

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def read(self, start: int, end: int) -> torch.Tensor:
        """Elements [start, end) as an fp32 copy the caller may overwrite."""
        if self.reader is not None:
            return self.reader(start, end).to(torch.float32)  # a fresh slice: widened, or itself if fp32
        return self.flat[start:end].to(torch.float32, copy=True)


def operands(*inputs: torch.Tensor | Operand) -> list[Operand]:
    """Every input as an Operand (tensors wrapped as they are; they are only read)."""
    return [x if isinstance(x, Operand) else Operand(x) for x in inputs]


def slices(numel: int, count: int) -> Iterator[tuple[int, int]]:
    """[start, end) ranges over `numel` elements, sized so that one slice of each of `count` inputs
    together stays near STREAM_ELEMENTS."""
    step = min(MAX_SLICE, max(MIN_SLICE, STREAM_ELEMENTS // max(count, 1)))
    for start in range(0, numel, step):
        yield start, min(numel, start + step)


def result_like(first: Operand) -> torch.Tensor:
    """The method's fp32 result: one input's size, on the inputs' device."""
    return torch.empty(first.numel, dtype=torch.float32, device=first.device)
