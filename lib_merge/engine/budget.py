"""The bytes a merge holds for the keys between their read and their write, so that peak memory does not grow
with the model."""

from __future__ import annotations

IN_FLIGHT_BYTES = 512 << 20  # inputs + outputs of the keys being read, computed or written
# With many-model keys read whole, their inputs and results are in the arena (engine/arena.py), and the budget
# holds the outputs waiting for the keys before them to be written: with the arena's 1 GiB and the process's
# 0.4 GB, under the 2 GB a many-model merge may hold.
IN_FLIGHT_WITH_ARENA_BYTES = 256 << 20


def in_flight_bytes(arena_used: bool) -> int:
    return IN_FLIGHT_WITH_ARENA_BYTES if arena_used else IN_FLIGHT_BYTES


class ByteBudget:
    """Bytes taken by the keys in flight; the engine's one thread that submits keys takes and gives back."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def try_acquire(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def acquire_anyway(self, n: int) -> None:
        if self.used == 0 or self.used + n <= self.limit:
            self.used += n

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)
