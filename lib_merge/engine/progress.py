"""Progress of long phases, as events any surface can show (a bar, a status line, an API field)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long phase: hashing an input (bytes), matching for re-basin (layers), a method's
    pre-pass, or the main pass (tensors, with bytes written) that reads from disk or only from RAM."""

    phase: str  # "hashing" | "rebasin" | "<method> pre-pass" | "merging"
    done: int
    total: int
    unit: str  # "bytes" | "layers" | "tensors"
    bytes_done: int = 0  # the main pass: bytes handed to the sink so far
    bytes_total: int = 0
    item: str = ""  # hashing: the file's name; rebasin: the model; merging: "reading from disk" or "inputs in RAM"


ProgressFn = Callable[[ProgressEvent], None]


def hashing_progress(progress: ProgressFn | None, name: str) -> Callable[[int, int], None] | None:
    """A file hasher's (done, total) bytes callback as hashing events."""
    if progress is None:
        return None
    return lambda done, total: progress(ProgressEvent("hashing", done, total, "bytes", item=name))
