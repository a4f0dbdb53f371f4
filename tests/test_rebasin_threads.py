"""Re-basin's solver calls on threads give what solving in line gives: the same permutations, sweeps
and solver calls, for independent models (every large group needs the solver) and for groups that
read each other's permutations (a chain, where a group's scores must wait for its neighbour's π)."""

from __future__ import annotations

import torch

from lib_merge.io.source import SourceModel
from lib_merge.io.synth import SynthSpec, write_synthetic
from lib_merge.rebasin import matching
from lib_merge.rebasin.groups import Group, Slice, permutation_groups
from lib_merge.rebasin.matching import MatchSettings, match_models


class DictReader:
    def __init__(self, tensors):
        self.tensors = tensors

    def view(self, key):
        return self.tensors[key]

    def release(self, key):
        pass


def both_ways(a, b, groups, max_sweeps: int = 10):
    inline = match_models(a, b, groups, MatchSettings(max_sweeps, solver_threads=0))
    threaded = match_models(a, b, groups, MatchSettings(max_sweeps, solver_threads=2))
    return inline, threaded


def assert_same(inline, threaded):
    assert inline.permutations.keys() == threaded.permutations.keys()
    different = [k for k, p in inline.permutations.items() if not torch.equal(p, threaded.permutations[k])]
    assert different == []
    assert (inline.sweeps, inline.solver_calls, inline.converged) == (
        threaded.sweeps,
        threaded.solver_calls,
        threaded.converged,
    )


def test_independent_models_match_the_same_on_threads(tmp_path):
    a_path, b_path = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_synthetic(str(a_path), SynthSpec("sdxl", scale=16, seed=1, dtype=torch.float32, std=0.02))
    write_synthetic(str(b_path), SynthSpec("sdxl", scale=16, seed=2, dtype=torch.float32, std=0.02))
    a, b = SourceModel(str(a_path)), SourceModel(str(b_path))
    try:
        groups = permutation_groups(a.shapes, "sdxl")
        inline, threaded = both_ways(a, b, groups)
    finally:
        a.close()
        b.close()
    assert_same(inline, threaded)
    large = [g for g in groups if g.size > 64]
    assert inline.solver_calls >= len(large) // 2  # unrelated weights: the argmax is rarely a permutation
    moved = sum(not torch.equal(p, torch.arange(len(p))) for p in threaded.permutations.values())
    assert moved > len(groups) * 0.9


def test_a_chain_of_dependent_groups_matches_the_same_on_threads():
    """W2 has both axes permuted: h2's scores read h1's π and h1's read h2's, so each group's solver
    call must end before the other's scores are computed; unrelated B makes every call need the solver."""
    gen = torch.Generator().manual_seed(21)
    h1, h2, h3 = 40, 36, 32
    shapes = {"w1": (h1, 8), "w2": (h2, h1), "w3": (h3, h2), "w4": (8, h3)}
    a = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    b = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    groups = [
        Group("h1", h1, (Slice("w1", 0, 0), Slice("w2", 1, 0)), "l1"),
        Group("h2", h2, (Slice("w2", 0, 0), Slice("w3", 1, 0)), "l2"),
        Group("h3", h3, (Slice("w3", 0, 0), Slice("w4", 1, 0)), "l3"),
    ]
    inline, threaded = both_ways(DictReader(a), DictReader(b), groups)
    assert_same(inline, threaded)
    assert inline.sweeps >= 2 and inline.solver_calls >= 3


def test_the_pool_holds_no_more_matrices_than_it_has_threads(monkeypatch):
    """Each pending call holds an n × n score matrix: a full pool settles the oldest call first."""
    most = []
    original = matching._Solver.assign

    def counting(self, name, scores, perms, changed):
        original(self, name, scores, perms, changed)
        most.append(len(self.pending))

    monkeypatch.setattr(matching._Solver, "assign", counting)
    gen = torch.Generator().manual_seed(22)
    a = {f"w{i}": torch.randn(24, 6, generator=gen) for i in range(6)}
    b = {f"w{i}": torch.randn(24, 6, generator=gen) for i in range(6)}
    groups = [Group(f"g{i}", 24, (Slice(f"w{i}", 0, 0),), f"l{i}") for i in range(6)]
    result = match_models(DictReader(a), DictReader(b), groups, MatchSettings(solver_threads=2))
    assert result.solver_calls == 6 and max(most) == 2
