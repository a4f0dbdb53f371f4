"""What a merge run is given (device, threads, cancel token, cache, progress) and what it reports."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Protocol

import torch

from lib_merge.engine.progress import ProgressFn
from lib_merge.errors import Cancelled
from lib_merge.io.cache import TensorCache
from lib_merge.io.device import check_device
from lib_merge.io.writer import PlannedTensor


class CancelToken:
    """Set from any thread; the engine stops before the next key."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("merge cancelled")


class Sink(Protocol):
    """`begin`, `put` for each key, then the caller finishes. `abort` follows any exit once `begin`
    was called, also one that `begin` itself raised part-way (a file sink's temporary file)."""

    def begin(self, plan: list[PlannedTensor]) -> None: ...
    def put(self, key: str, tensor: torch.Tensor) -> None: ...
    def abort(self) -> None: ...


@dataclass
class EngineOptions:
    device: str = "cpu"
    compute_dtype: torch.dtype = torch.float32
    threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    nonfinite: str = "error"  # error | keep_a | ignore
    clamp: bool = False  # fp8 outputs: clamp values beyond the format's range instead of refusing the key
    progress: ProgressFn | None = None
    cancel: CancelToken | None = None
    cache: TensorCache | None = None  # source tensors kept between merges (off by default)

    def __post_init__(self) -> None:
        check_device(self.device)  # a device this machine lacks is refused before any file is read


@dataclass
class EngineReport:
    keys: int = 0
    merged: int = 0
    copied: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_total: int = 0  # of the output
    nonfinite_kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the run found worth telling (re-basin matching)
