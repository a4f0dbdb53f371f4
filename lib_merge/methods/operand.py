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

    def __init__(
        self,
        tensor: torch.Tensor,
        reader: Callable[..., torch.Tensor] | None = None,
        result: torch.Tensor | None = None,
    ):
        self.flat = tensor.reshape(-1)
        self.shape = tuple(tensor.shape)
        # reader(start, end, into): elements [start, end) read from the tensor's file into the byte buffer
        # `into` (engine/streamed.py). Mapped pages would count as the process's own memory.
        self.reader = reader
        # fp32 memory that a method whose first input this is may put its result in (`result_like`): the engine
        # lends a region it reuses for every key, where fresh memory would cost a page fault per 4 KiB.
        self.result = result
        self._bytes: torch.Tensor | None = None

    @property
    def numel(self) -> int:
        return self.flat.numel()

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def read(self, start: int, end: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Elements [start, end) in fp32: written into `out` (a buffer of end − start elements) and
        returned, or a fresh copy; either way the caller may overwrite them."""
        if self.reader is not None:
            nbytes = (end - start) * self.flat.element_size()
            if self._bytes is None or self._bytes.numel() < nbytes:
                self._bytes = torch.empty(nbytes, dtype=torch.uint8)
            part = self.reader(start, end, self._bytes[:nbytes])
        else:
            part = self.flat[start:end]
        if out is not None:
            return out.copy_(part)
        return part.to(torch.float32, copy=True)


def operands(*inputs: torch.Tensor | Operand) -> list[Operand]:
    """Every input as an Operand (tensors wrapped as they are; they are only read)."""
    return [x if isinstance(x, Operand) else Operand(x) for x in inputs]


def slice_size(count: int) -> int:
    """Elements per slice when `count` inputs are read side by side: together near STREAM_ELEMENTS."""
    return min(MAX_SLICE, max(MIN_SLICE, STREAM_ELEMENTS // max(count, 1)))


def slices(numel: int, count: int) -> Iterator[tuple[int, int]]:
    """[start, end) ranges over `numel` elements, slice_size(count) long."""
    step = slice_size(count)
    for start in range(0, numel, step):
        yield start, min(numel, start + step)


def buffers(rows: int, count: int, like: Operand) -> torch.Tensor:
    """`rows` fp32 buffers of one slice each (rows × slice_size(count)), made once per key: fresh memory for
    every slice would cost more than the arithmetic on it."""
    return torch.empty((rows, slice_size(count)), dtype=torch.float32, device=like.device)


def result_like(first: Operand) -> torch.Tensor:
    """The method's fp32 result: one input's size, on the inputs' device (in the memory lent with the first
    input, where there is)."""
    lent = first.result
    if lent is not None and lent.dtype == torch.float32 and lent.numel() >= first.numel and lent.device == first.device:
        return lent[: first.numel]
    return torch.empty(first.numel, dtype=torch.float32, device=first.device)
