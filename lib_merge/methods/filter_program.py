"""The size-3 median as one straight program of min/max instructions (run by filter_kernels.run_program).

The values are laid out as one row per position of the short axes (a convolution kernel's 3×3)
over the long axes' plane, padded by one repeated edge value on every long axis ("reflect" with a
window of 3 repeats the edge). For an element e of that flat plane the program reads each row at
fixed offsets from e, merges sorted runs of window values by Batcher's odd-even merge networks
(long axes first, each run shared by the windows that hold it, then the short positions, edge
windows reusing a doubled run; along the last axis only the middle rank is selected), and writes the
median of every position.

Each instruction makes new values; instructions whose results nothing reads are dropped, and the
values are then packed into as few scratch rows as their lifetimes allow (an instruction never
writes a row it reads, so its loop needs no overlap check). Elements near the plane's padding get
meaningless results, which the caller cuts away.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from lib_merge.methods.networks import band, merge_network

Offset = tuple[int, ...]  # a displacement along each long axis


@dataclass(frozen=True)
class Program:
    """inputs: (row, slot) with the displacement `offsets[i]`; program: (a, b, low, high) per instruction."""

    rows_and_slots: np.ndarray
    offsets: np.ndarray
    program: np.ndarray
    outputs: np.ndarray
    slots: int

    def inputs(self, strides: tuple[int, ...]) -> np.ndarray:
        """(row, flat offset, slot) per input for a plane with these element strides of the long axes."""
        flat = self.offsets @ np.asarray(strides, dtype=np.int64)
        return np.ascontiguousarray(np.column_stack([self.rows_and_slots[:, 0], flat, self.rows_and_slots[:, 1]]))


class _Builder:
    def __init__(self) -> None:
        self.count = 0
        self.loads: dict[tuple[int, Offset], int] = {}
        self.steps: list[tuple[int, int, int, int]] = []

    def _new(self) -> int:
        self.count += 1
        return self.count - 1

    def load(self, row: int, offset: Offset) -> int:
        if (row, offset) not in self.loads:
            self.loads[row, offset] = self._new()
        return self.loads[row, offset]

    def merge(self, a: list[int], b: list[int], ranks: tuple[int, ...] | None = None) -> list[int]:
        comparators, order = merge_network(len(a), len(b), ranks)
        slots = [*a, *b]
        for i, j, keep_min, keep_max in comparators:
            x, y = slots[i], slots[j]
            if x == y:  # a value against itself (a doubled run): nothing to exchange
                continue
            low, high = self._new() if keep_min else -1, self._new() if keep_max else -1
            self.steps.append((x, y, low, high))
            slots[i], slots[j] = low, high
        return [slots[k] for k in order]

    def _one(self, a: int, b: int, maximum: bool) -> int:
        value = self._new()
        self.steps.append((a, b, -1, value) if maximum else (a, b, value, -1))
        return value

    def middle(self, pair_band: list[int], run: list[int]) -> int:
        """The middle of the 3m values X ∪ C: X the sorted 2m of two neighbours (its band ranks), C a sorted m.

        The k-th smallest of two sorted runs is min over c of max(C[c], X[k − c]) (1-based, C[0] = −∞).
        """
        m = len(run)
        result = self._one(pair_band[-1], self._one(run[0], pair_band[m - 1], True), False)
        for c in range(2, m + 1):
            result = self._one(result, self._one(run[c - 1], pair_band[m - c], True), False)
        return result

    def three(self, left: list[int], centre: list[int], right: list[int], final: bool) -> list[int]:
        if final:
            return [self.middle(self.merge(left, centre, band(len(left))), right)]
        return self.merge(self.merge(left, centre), right)

    def compile(self, outputs: list[int]) -> Program:
        live, kept = set(outputs), []
        for a, b, low, high in reversed(self.steps):
            low, high = (low if low in live else -1), (high if high in live else -1)
            if low >= 0 or high >= 0:
                kept.append((a, b, low, high))
                live |= {a, b}
        kept.reverse()
        last = {v: k for k, (a, b, _, _) in enumerate(kept) for v in (a, b)}
        last.update({v: len(kept) for v in outputs})
        rows: dict[int, int] = {}
        free: list[int] = []
        count = 0

        def take() -> int:
            nonlocal count
            if free:
                return free.pop()
            count += 1
            return count - 1

        loads = [(row, offset, value) for (row, offset), value in self.loads.items() if value in live]
        for *_, value in loads:
            rows[value] = take()
        program = []
        for k, (a, b, low, high) in enumerate(kept):
            made = [take() if v >= 0 else -1 for v in (low, high)]  # before a and b are freed: never in place
            for v, row in zip((low, high), made, strict=True):
                if v >= 0:
                    rows[v] = row
            program.append((rows[a], rows[b], *made))
            for v in {a, b}:
                if last[v] == k:
                    free.append(rows[v])
        return Program(
            rows_and_slots=np.array([(row, rows[v]) for row, _, v in loads], dtype=np.int64).reshape(-1, 2),
            offsets=np.array([offset for _, offset, _ in loads], dtype=np.int64).reshape(len(loads), -1),
            program=np.array(program, dtype=np.int64).reshape(-1, 4),
            outputs=np.array([rows[v] for v in outputs], dtype=np.int64),
            slots=count,
        )


@functools.cache  # a few layouts serve every tensor of a model
def median_program(long_axes: int, short_shape: tuple[int, ...]) -> Program:
    """The program for `long_axes` padded long axes and the short positions of `short_shape`
    (rows in C order), writing the median of each position's window."""
    builder = _Builder()
    positions = list(itertools.product(*(range(size) for size in short_shape)))
    row_of = {p: i for i, p in enumerate(positions)}
    unit = [tuple(int(i == a) for i in range(long_axes)) for a in range(long_axes)]

    @functools.cache
    def run(level: int, position: tuple[int, ...], offset: Offset) -> tuple[int, ...]:
        if level == 0:
            return (builder.load(row_of[position], offset),)
        step = unit[level - 1]
        below = [
            run(level - 1, position, tuple(o + d * s for o, s in zip(offset, step, strict=True))) for d in (-1, 0, 1)
        ]
        final = not short_shape and level == long_axes
        return tuple(builder.three(*(list(r) for r in below), final))

    zero = (0,) * long_axes
    runs = {p: list(run(long_axes, p, zero)) for p in positions}
    for axis, size in enumerate(short_shape):
        final = axis == len(short_shape) - 1
        runs = {p: _along_short_axis(builder, runs, p, axis, size, final) for p in positions}
    return builder.compile([runs[p][0] for p in positions])


def _along_short_axis(
    builder: _Builder,
    runs: dict[tuple[int, ...], list[int]],
    position: tuple[int, ...],
    axis: int,
    size: int,
    final: bool,
) -> list[int]:
    """A position's run after its window along one short axis of 2 or 3 positions.

    At the edges a window holds its edge position twice: the doubled run needs no comparison, so an end
    window pairs it with its inner neighbour, and only the middle pair is merged."""
    at = position[axis]

    def neighbour(q: int) -> list[int]:
        return runs[position[:axis] + (q,) + position[axis + 1 :]]

    own = runs[position]
    if at in (0, size - 1):
        pair = [v for v in own for _ in (0, 1)]  # the edge value twice: a doubled run, sorted already
        other = neighbour(1 if at == 0 else size - 2)
        if final:
            ranks = band(len(own))
            return [builder.middle(pair[ranks[0] : ranks[-1] + 1], other)]
        return builder.merge(pair, other)
    return builder.three(neighbour(at - 1), own, neighbour(at + 1), final)


def plane_strides(padded_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous plane's axes."""
    return tuple(math.prod(padded_shape[i + 1 :]) for i in range(len(padded_shape)))


def run_with_numpy(
    source: np.ndarray,
    inputs: np.ndarray,
    program: np.ndarray,
    outputs: np.ndarray,
    result: np.ndarray,
    start: int,
    stop: int,
    slots: int,
) -> None:
    """filter_kernels.run_program in numpy, for machines without numba: each instruction one array
    operation over all elements [start, stop) at once."""
    scratch = np.empty((max(slots, 1), stop - start), dtype=np.float32)
    for row, offset, slot in inputs.tolist():
        scratch[slot] = source[row, start + offset : stop + offset]
    minimum, maximum = np.minimum, np.maximum
    for a, b, low, high in program.tolist():
        if low >= 0:
            minimum(scratch[a], scratch[b], out=scratch[low])
        if high >= 0:
            maximum(scratch[a], scratch[b], out=scratch[high])
    for k, slot in enumerate(outputs.tolist()):
        result[k, start:stop] = scratch[slot]
