"""Where tensors are computed: the device a user names, checked before any tensor is read, and the
page-locked host buffers that carry a worker's chunks to a CUDA device and its results back.

On the CPU none of this is used: tensors are computed where they are read. On CUDA, a copy from
ordinary (pageable) memory is staged by the driver through a buffer of its own while the thread waits;
a copy from page-locked memory is a DMA the GPU runs while the thread goes on. So each engine worker
owns a few page-locked buffers and a CUDA stream of its own (docs/PERFORMANCE.md, "GPU path").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lib_merge.errors import ParameterError

DEVICES = "cpu, cuda, cuda:N or mps"
PIECE_BYTES = 16 << 20  # one page-locked buffer: a GPU chunk of fp32 (engine/run.py DEVICE_CHUNK_ELEMENTS)
RING = 3  # buffers per worker: the CPU fills one while the GPU copies out of another


def check_device(name: str) -> torch.device:
    """The device `name` names, or one ParameterError naming it (unknown; CUDA or MPS asked for where
    this torch has none, or not that index). A CUDA device without an index becomes the current one, so
    it compares equal to its tensors' device."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ParameterError(f"unknown device {name!r}; use {DEVICES}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise ParameterError(f"device {name!r} asked for, but CUDA is not available here ({why}); use cpu")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            raise ParameterError(f"device {name!r} asked for, but this machine has {count} CUDA device(s)")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ParameterError(f"device {name!r} asked for, but MPS is not available here; use cpu")
        return torch.device("mps", 0)
    raise ParameterError(f"unknown device {name!r}; use {DEVICES}")


def uses_pinned(device: torch.device) -> bool:
    """Whether chunks go to `device` through page-locked host buffers: on CUDA only (the CPU computes
    where it reads; MPS shares memory with the CPU and has no page-locked allocator)."""
    return device.type == "cuda"


@dataclass
class _Buffer:
    host: torch.Tensor  # uint8, page-locked on CUDA
    event: torch.cuda.Event | None  # recorded after the last device copy that used `host`


class Transfer:
    """One worker's host buffers (and, on CUDA, its stream) for copies to `device` and back.

    The rule that makes the asynchronous copies safe: every buffer carries the event recorded after the
    last copy that read or wrote it, and the CPU waits for that event before it touches the buffer
    again. On a CPU device (tests) the same code runs with plain buffers and no stream or events.
    """

    def __init__(self, device: torch.device, piece_bytes: int | None = None, ring: int = RING):
        piece_bytes = piece_bytes or PIECE_BYTES
        if ring < 2:
            raise ValueError("a ring of at least two buffers: one is read out while the next is filled")
        self.device = device
        self.pinned = uses_pinned(device)
        self.stream = torch.cuda.Stream(device) if self.pinned else None
        self.piece_bytes = piece_bytes
        self.buffers = [
            _Buffer(torch.empty(piece_bytes, dtype=torch.uint8, pin_memory=self.pinned),
                    torch.cuda.Event(blocking=True) if self.pinned else None)  # a waiting worker sleeps
            for _ in range(ring)
        ]  # fmt: skip
        self.turn = 0

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Device work of one key on this worker's stream: it starts after everything queued before it
        on the current stream (a restore's writes into the model) and is finished when the block ends."""
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(self.stream):
                yield
        finally:
            self.stream.synchronize()

    def _take(self) -> _Buffer:
        """The next buffer of the ring, once the copy that last used it is done."""
        buffer = self.buffers[self.turn]
        self.turn = (self.turn + 1) % len(self.buffers)
        if buffer.event is not None:
            buffer.event.synchronize()
        return buffer

    def _sent(self, buffer: _Buffer) -> None:
        if buffer.event is not None:
            buffer.event.record(self.stream)

    def _pieces(self, numel: int, itemsize: int) -> Iterator[tuple[int, int]]:
        per = self.piece_bytes // itemsize
        for start in range(0, numel, per):
            yield start, min(numel, start + per)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A copy of the CPU `tensor` (any layout, its own dtype: fp16 crosses the bus as fp16) on the device."""
        src = tensor.reshape(-1)
        out = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        for start, end in self._pieces(src.numel(), src.element_size()):
            buffer = self._take()
            part = buffer.host[: (end - start) * src.element_size()].view(src.dtype)
            part.copy_(src[start:end])  # the CPU's copy (for a mapped input: its read from the file)
            out[start:end].copy_(part, non_blocking=True)
            self._sent(buffer)
        return out.view(tensor.shape)

    def to_host(self, tensor: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`tensor` (on the device) cast to `out`'s dtype on the device, then copied into `out` (a
        contiguous CPU tensor, or a tensor on the same device: copied there, no trip to the host)."""
        if out.device.type != "cpu":
            return out.copy_(tensor.reshape(out.shape))
        src = tensor.reshape(-1).to(out.dtype)  # narrowed before the bus: half the bytes for fp16 results
        dst = out.view(-1)
        pending: tuple[_Buffer, torch.Tensor, torch.Tensor] | None = None
        for start, end in self._pieces(src.numel(), src.element_size()):
            buffer = self._take()
            part = buffer.host[: (end - start) * src.element_size()].view(src.dtype)
            part.copy_(src[start:end], non_blocking=True)
            self._sent(buffer)
            if pending is not None:  # the previous piece is read out while this one crosses the bus
                _read_out(*pending)
            pending = (buffer, part, dst[start:end])
        if pending is not None:
            _read_out(*pending)
        return out


def _read_out(buffer: _Buffer, part: torch.Tensor, target: torch.Tensor) -> None:
    if buffer.event is not None:
        buffer.event.synchronize()
    target.copy_(part)
