"""Weight matching of B to A: for every group, the permutation of B's slices that best lines them
up with A's (docs/REBASIN.md §2).

Coordinate ascent over the groups: a group's score matrix S[i, j] = Σ over its slices of
⟨A slice i, B slice j⟩ (B with the other groups' current permutations applied), then the
assignment that maximises Σ S[i, π(i)]. When every row's largest entry lies in a different
column, those argmaxes are the optimal assignment and the solver is skipped. A group is
recomputed in a later sweep only when a group it shares a tensor with changed, so with the
independent groups of SD models one sweep settles everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from lib_merge.rebasin.assignment import optimal_assignment
from lib_merge.rebasin.groups import Group, Slice


class TensorReader(Protocol):
    def view(self, key: str) -> torch.Tensor: ...
    def release(self, key: str) -> None: ...


@dataclass(frozen=True)
class MatchSettings:
    max_sweeps: int = 10
    device: str = "cpu"  # where the score products run; the assignment solve runs on the CPU
    # Solver calls run on threads of their own (their heavy parts let go of the GIL) while the next
    # layers' scores are computed; 0 solves in line. The result is the same either way.
    solver_threads: int = 2


@dataclass
class MatchResult:
    permutations: dict[str, torch.Tensor]  # group name -> π (int64): row i of π(B) is row π[i] of B
    sweeps: int
    converged: bool
    solver_calls: int = 0  # groups whose argmax was not a permutation
    seconds: float = 0.0


@dataclass
class _Layer:
    name: str
    groups: list[Group] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for g in self.groups for k in g.keys))


def match_models(
    a: TensorReader,
    b: TensorReader,
    groups: list[Group],
    settings: MatchSettings = MatchSettings(),
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MatchResult:
    """π for every group so that π(B) is as close to A as the symmetries allow.

    `check` is called between layers (it raises to cancel); `progress(done, total)` counts layers.
    """
    start = time.perf_counter()
    device = torch.device(settings.device)
    perms = {g.name: torch.arange(g.size) for g in groups}
    dependents = _dependents(groups)
    layers = _layers(groups)
    dirty = {g.name for g in groups}
    result = MatchResult(perms, 0, False)
    with _Solver(settings.solver_threads) as solver:
        while dirty and result.sweeps < settings.max_sweeps:
            result.sweeps += 1
            changed: set[str] = set()
            todo = [layer for layer in layers if any(g.name in dirty for g in layer.groups)]
            for done, (layer, tensors) in enumerate(_read_layers(todo, a, b, device, check), 1):
                for g in layer.groups:
                    if g.name not in dirty:
                        continue
                    # Scores read the current π of the groups sharing a tensor with g: settle those first.
                    solver.settle(dependents.read_by.get(g.name, ()), perms, changed)
                    scores = _scores(g, tensors, dependents.slices, perms)
                    solver.assign(g.name, scores, perms, changed)
                if progress is not None:
                    progress(done, len(todo))
            solver.settle(None, perms, changed)
            dirty = {d for name in changed for d in dependents.of.get(name, ())}
    result.solver_calls = solver.calls
    result.converged = not dirty
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class _Dependents:
    of: dict[str, set[str]]  # group -> groups whose scores read a tensor this group permutes on another axis
    slices: dict[str, list[tuple[Slice, str]]]  # key -> (slice, group) of every group on that key
    read_by: dict[str, set[str]] = field(default_factory=dict)  # group -> groups whose π its scores read


def _dependents(groups: list[Group]) -> _Dependents:
    by_key: dict[str, list[tuple[Slice, str]]] = {}
    for g in groups:
        for s in g.slices:
            by_key.setdefault(s.key, []).append((s, g.name))
    of: dict[str, set[str]] = {}
    for entries in by_key.values():
        for s, name in entries:
            for t, other in entries:
                if t.axis != s.axis and other != name:
                    of.setdefault(other, set()).add(name)
    read_by: dict[str, set[str]] = {}
    for name, readers in of.items():
        for reader in readers:
            read_by.setdefault(reader, set()).add(name)
    return _Dependents(of, by_key, read_by)


def _layers(groups: list[Group]) -> list[_Layer]:
    layers: dict[str, _Layer] = {}
    for g in groups:
        layers.setdefault(g.layer, _Layer(g.layer)).groups.append(g)
    return list(layers.values())


def _read_layers(
    layers: list[_Layer], a: TensorReader, b: TensorReader, device: torch.device, check: Callable[[], None] | None
) -> Iterator[tuple[_Layer, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """Each layer's tensors of A and B in fp32, converted once; the file pages are dropped after."""
    for layer in layers:
        if check is not None:
            check()
        tensors = {}
        for key in layer.keys:
            tensors[key] = (_fp32(a, key, device), _fp32(b, key, device))
        yield layer, tensors


def _fp32(reader: TensorReader, key: str, device: torch.device) -> torch.Tensor:
    try:
        return reader.view(key).to(device, torch.float32, copy=True)
    finally:
        reader.release(key)


def _window(t: torch.Tensor, s: Slice, size: int) -> torch.Tensor:
    """The slice's indices as rows: (size, everything else)."""
    part = t.narrow(s.axis, s.start, size)
    return part.movedim(s.axis, 0).reshape(size, -1)


def _scores(
    g: Group,
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    slices_by_key: dict[str, list[tuple[Slice, str]]],
    perms: dict[str, torch.Tensor],
) -> torch.Tensor:
    rows_a, rows_b = [], []
    for s in g.slices:
        a, b = tensors[s.key]
        rows_a.append(_window(a, s, g.size))
        rows_b.append(_window(_other_axes_permuted(b, s, slices_by_key[s.key], perms), s, g.size))
    # One product over the slices side by side: a single pass over the n × n result.
    return torch.cat(rows_a, dim=1) @ torch.cat(rows_b, dim=1).T


def _other_axes_permuted(
    b: torch.Tensor, s: Slice, on_key: list[tuple[Slice, str]], perms: dict[str, torch.Tensor]
) -> torch.Tensor:
    """B's tensor with the current permutations of the other groups on its other axes applied."""
    for axis in {t.axis for t, _ in on_key if t.axis != s.axis}:
        index = full_index(b.shape[axis], [(t, perms[name]) for t, name in on_key if t.axis == axis])
        b = b.index_select(axis, index.to(b.device))
    return b


def full_index(length: int, windows: list[tuple[Slice, torch.Tensor]]) -> torch.Tensor:
    """One axis's index: identity, with each group's permutation inside its window."""
    index = torch.arange(length)
    for s, perm in windows:
        index[s.start : s.start + len(perm)] = perm + s.start
    return index


def _assign(scores: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The assignment maximising Σ S[i, π(i)], and 1 when the solver was needed."""
    fast = _argmax_assignment(scores)
    return (fast, 0) if fast is not None else (solve(scores), 1)


def _argmax_assignment(scores: torch.Tensor) -> torch.Tensor | None:
    """Each row's best column when no two rows share one (then nothing can do better), else None."""
    best = scores.argmax(dim=1).cpu()
    return best if bool((torch.bincount(best, minlength=scores.shape[0]) == 1).all()) else None


class _Solver:
    """Assignments of the groups of one sweep: the argmax fast path at once, solver calls on a
    thread pool (bounded: each holds an n × n matrix), each group's π updated when its call ends."""

    def __init__(self, threads: int):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="rebasin-solve") if threads > 0 else None
        self.limit = max(threads, 1)
        self.pending: dict[str, tuple[Future, torch.Tensor]] = {}
        self.calls = 0

    def __enter__(self) -> _Solver:
        return self

    def __exit__(self, *exc) -> None:
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def assign(self, name: str, scores: torch.Tensor, perms: dict[str, torch.Tensor], changed: set[str]) -> None:
        if self.pool is None:
            new, solved = _assign(scores)
        else:
            new, solved = _argmax_assignment(scores), 0
        if new is not None:
            self.calls += solved
            _update(name, scores, new, perms, changed)
            return
        self.calls += 1
        while len(self.pending) >= self.limit:
            self.settle([next(iter(self.pending))], perms, changed)
        self.pending[name] = (self.pool.submit(solve, scores), scores)

    def settle(self, names, perms: dict[str, torch.Tensor], changed: set[str]) -> None:
        """Wait for the pending calls of these groups (None: all) and apply their results."""
        for name in list(self.pending) if names is None else [n for n in names if n in self.pending]:
            future, scores = self.pending.pop(name)
            _update(name, scores, future.result(), perms, changed)


def _update(name: str, scores: torch.Tensor, new: torch.Tensor, perms: dict[str, torch.Tensor], changed: set[str]):
    if _improves(scores, perms[name], new):
        perms[name] = new
        changed.add(name)


def solve(scores: torch.Tensor) -> torch.Tensor:
    """The optimal assignment (exact, on the CPU): sparse candidates proven optimal, else scipy's dense solver."""
    return optimal_assignment(scores)


def _improves(scores: torch.Tensor, current: torch.Tensor, new: torch.Tensor) -> bool:
    """Whether `new` scores clearly better than `current` (ties keep the current one, so a model
    matched to itself stays the identity even where rows are equal)."""
    if torch.equal(current, new):
        return False
    rows = torch.arange(len(new), device=scores.device)
    now = scores[rows, current.to(scores.device)].double()
    then = scores[rows, new.to(scores.device)].double()
    tolerance = 1e-6 * float(now.abs().sum() + then.abs().sum())  # fp32 rounding of the scores
    return float(then.sum() - now.sum()) > tolerance
