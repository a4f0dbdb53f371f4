"""Model B seen through the permutations that align it with A: a source the engine reads like a
file, so `rebasin(B, ref=A)` fits under any merge (docs/REBASIN.md §3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lib_merge.errors import ShapeMismatchError
from lib_merge.io import TensorInfo
from lib_merge.io.source import SourceModel
from lib_merge.methods.rebasin import rebasin
from lib_merge.rebasin.groups import Group, Slice, permutation_groups
from lib_merge.rebasin.matching import MatchSettings, full_index, match_models
from lib_merge.rebasin.store import cache_folder, cache_path, load_permutations, store_permutations


@dataclass(frozen=True)
class Prepared:
    """How the permutations were found, for the notes of a merge."""

    from_cache: bool
    groups: int
    moved: int
    seconds: float = 0.0
    sweeps: int = 0
    solver_calls: int = 0
    converged: bool = True

    @property
    def note(self) -> str:
        if self.from_cache:
            return f"re-basin: permutations from the cache ({self.moved} of {self.groups} groups permuted)"
        capped = "" if self.converged else " (stopped by the sweep cap before settling)"
        return (
            f"re-basin: matched {self.groups} groups in {self.seconds:.1f} s, {self.sweeps} sweep(s){capped}; "
            f"{self.moved} permuted, {self.solver_calls} needed the assignment solver"
        )


class Permutations:
    """Every group's π, applied to whole tensors by key: out = B with each window reordered."""

    def __init__(self, groups: list[Group], perms: dict[str, torch.Tensor]):
        self.perms = perms
        self.slices: dict[str, list[tuple[Slice, str]]] = {}
        for g in groups:
            for s in g.slices:
                self.slices.setdefault(s.key, []).append((s, g.name))

    def index(self, key: str, shape: tuple[int, ...]) -> list[tuple[int, torch.Tensor]]:
        """The key's (axis, index) pairs, leaving out axes on which nothing moves."""
        entries = self.slices.get(key, [])
        out = []
        for axis in sorted({s.axis for s, _ in entries}):
            index = full_index(shape[axis], [(s, self.perms[name]) for s, name in entries if s.axis == axis])
            if not torch.equal(index, torch.arange(len(index))):
                out.append((axis, index))
        return out

    def apply(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        return rebasin(tensor, permutation=self.index(key, tuple(tensor.shape)))

    @property
    def moved(self) -> int:
        """How many groups are not the identity."""
        return sum(not torch.equal(p, torch.arange(len(p))) for p in self.perms.values())


class PermutedModel:
    """B with every group's permutation applied on read; keys outside the groups read as B's."""

    def __init__(self, b: SourceModel, ref: SourceModel, max_sweeps: int = 10):
        self.b, self.ref, self.max_sweeps = b, ref, max_sweeps
        self.groups = permutation_groups(b.shapes, b.arch.id)
        _check_fits(self.groups, b, ref)
        self._covered = {s.key for g in self.groups for s in g.slices}
        self.permutations: Permutations | None = None
        self.prepared: Prepared | None = None

    # What the engine asks of a source.
    @property
    def name(self) -> str:
        return f"{self.b.name} (re-based to {self.ref.name})"

    def __contains__(self, key: str) -> bool:
        return key in self.b

    def info(self, key: str) -> TensorInfo:
        return self.b.info(key)

    @property
    def cache_identity(self) -> tuple:
        return ("rebasin", self.max_sweeps, self.b.cache_identity, self.ref.cache_identity)

    def covers(self, key: str) -> bool:
        """Whether a permutation may change this key (known from the headers, before matching)."""
        return key in self._covered

    def read(self, key: str) -> torch.Tensor:
        return self._permuted(key, self.b.read(key))

    def view(self, key: str) -> torch.Tensor:
        """A permuted copy (or B's own view where nothing moves); `release` after use."""
        return self._permuted(key, self.b.view(key))

    def release(self, key: str) -> None:
        self.b.release(key)

    def read_ahead(self, key: str, nbytes: int) -> None:
        self.b.read_ahead(key, nbytes)

    def range_reader(self, key: str):
        """B's own reads where no permutation can move the key; a permuted tensor is a copy of its own."""
        return None if self.covers(key) else self.b.range_reader(key)

    def _permuted(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        if self.permutations is None:
            raise RuntimeError("re-basin: B read before its permutations were matched")
        return self.permutations.apply(key, tensor)

    def prepare(
        self,
        device: str = "cpu",
        check: Callable[[], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
        folder: Path | None = None,
    ) -> Prepared:
        """The permutations from the cache, or matched now and cached; idempotent."""
        if self.prepared is not None:
            return self.prepared
        sha_a, sha_b = self.ref.sha256(), self.b.sha256()
        path = cache_path(folder or cache_folder(), sha_a, sha_b)
        cached = load_permutations(path, self.groups, sha_a, sha_b, self.max_sweeps)
        if cached is not None:
            self.permutations = Permutations(self.groups, cached)
            self.prepared = Prepared(True, len(self.groups), self.permutations.moved)
            return self.prepared
        result = match_models(self.ref, self.b, self.groups, MatchSettings(self.max_sweeps, device), check, progress)
        store_permutations(path, result.permutations, sha_a, sha_b, self.max_sweeps, result.converged)
        self.permutations = Permutations(self.groups, result.permutations)
        self.prepared = Prepared(
            False,
            len(self.groups),
            self.permutations.moved,
            result.seconds,
            result.sweeps,
            result.solver_calls,
            result.converged,
        )
        return self.prepared


def _check_fits(groups: list[Group], b: SourceModel, ref: SourceModel) -> None:
    """Every permuted tensor exists in both models with one shape, and every window fits in it."""
    for g in groups:
        for s in g.slices:
            if s.key not in ref:
                raise ShapeMismatchError(f"re-basin: {ref.name} has no key {s.key!r}, which {b.name} has")
            shape_b, shape_a = tuple(b.info(s.key).shape), tuple(ref.info(s.key).shape)
            if shape_a != shape_b:
                raise ShapeMismatchError(
                    f"re-basin: key {s.key!r} has shape {list(shape_a)} in {ref.name} but {list(shape_b)} in {b.name}"
                )
            if len(shape_b) <= s.axis or s.start + g.size > shape_b[s.axis]:
                raise ShapeMismatchError(f"re-basin: key {s.key!r} of {b.name} has shape {list(shape_b)}")
