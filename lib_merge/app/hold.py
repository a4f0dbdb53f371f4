"""A job that owns the loaded model (a study) for its whole run, so that what it measures is its own merge."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from lib_merge.errors import BusyError


class ModelHold:
    """Held by one thread at a time; every other thread's merge, restore or generation answers busy instead
    of waiting for the job's end (a study can run for hours)."""

    def __init__(self) -> None:
        self._holder: tuple[int, str] | None = None  # (thread, job)

    @contextlib.contextmanager
    def held_by(self, job: str) -> Iterator[None]:
        self._holder = (threading.get_ident(), job)
        try:
            yield
        finally:
            self._holder = None

    def check(self) -> None:
        """BusyError when another thread's job holds the loaded model."""
        holder = self._holder
        if holder is not None and holder[0] != threading.get_ident():
            raise BusyError(f"{holder[1]} holds the loaded model; stop it first")
