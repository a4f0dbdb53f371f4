"""Re-basin's assignment solver: candidates proven optimal by duality give scipy's dense optimum, a
proof that fails brings in the entries that broke it, and without a proof the dense solver answers."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from lib_merge.rebasin import assignment
from lib_merge.rebasin.assignment import optimal_assignment


def scores_like_weights(n: int, width: int, seed: int, related: float = 0.0) -> torch.Tensor:
    """S = A·Bᵀ for random rows (unrelated models), B partly A's rows when `related` > 0."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, width, generator=gen)
    b = related * a[torch.randperm(n, generator=gen)] + torch.randn(n, width, generator=gen)
    return a @ b.T


def dense_optimum(scores: torch.Tensor) -> tuple[list[int], float]:
    """scipy's dense solver, written out here: the reference."""
    s = scores.double().numpy()
    rows, cols = linear_sum_assignment(s, maximize=True)
    return cols.tolist(), float(s[rows, cols].sum())


def total(scores: torch.Tensor, perm: torch.Tensor) -> float:
    return float(scores.double()[torch.arange(len(perm)), perm].sum())


@pytest.mark.parametrize(
    "n,width,seed,related",
    [(600, 300, 1, 0.0), (900, 700, 2, 0.0), (700, 200, 3, 0.3), (1100, 64, 4, 0.0)],
)
def test_large_matrices_get_the_dense_solvers_assignment(n, width, seed, related):
    scores = scores_like_weights(n, width, seed, related)
    cols, best = dense_optimum(scores)
    perm = optimal_assignment(scores)
    assert perm.tolist() == cols
    assert total(scores, perm) == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("candidates", [4, 1])
def test_a_candidate_answer_that_is_not_optimal_is_found_out_and_improved(monkeypatch, candidates):
    """Few candidates per row and column: the sparse optimum misses the dense one; the check finds the
    entries that break the dual bound and the next rounds reach the dense optimum. With one candidate
    each there is no full matching among them at first: more are taken."""
    scores = scores_like_weights(800, 400, 5)
    solves, checks = [], []
    sparse_solve, violations = assignment._sparse_solve, assignment._violations
    monkeypatch.setattr(assignment, "_sparse_solve", lambda *a: solves.append(sparse_solve(*a)) or solves[-1])
    monkeypatch.setattr(assignment, "_violations", lambda *a: checks.append(violations(*a)) or checks[-1])
    monkeypatch.setattr(assignment, "dense_assignment", lambda s: pytest.fail("the dense solver was not needed"))
    perm = optimal_assignment(scores, candidates=candidates, rounds=50)
    assert len(checks) >= 2 and checks[0].numel() > 0 and checks[-1].numel() == 0
    assert (solves[0] is None) == (candidates == 1)
    assert perm.tolist() == dense_optimum(scores)[0]


def test_without_a_proof_the_dense_solver_answers(monkeypatch):
    scores = scores_like_weights(700, 300, 6)
    dense = []
    original = assignment.dense_assignment
    monkeypatch.setattr(assignment, "dense_assignment", lambda s: dense.append(1) or original(s))
    perm = optimal_assignment(scores, candidates=4, rounds=1)  # one round cannot prove this one
    assert dense == [1] and perm.tolist() == dense_optimum(scores)[0]
    # Never a full matching among the candidates, however many: the dense solver answers too.
    monkeypatch.setattr(assignment, "_sparse_solve", lambda *a: None)
    assert optimal_assignment(scores).tolist() == dense_optimum(scores)[0] and dense == [1, 1]


def test_equal_scores_give_an_optimal_permutation():
    """Ties (here: every row the same) have many optima: any of them, as a permutation, is right."""
    gen = torch.Generator().manual_seed(7)
    scores = torch.randn(1, 600, generator=gen).repeat(600, 1)
    scores[:, :300] = scores[:, :300].round()  # exact ties inside rows too
    perm = optimal_assignment(scores)
    assert sorted(perm.tolist()) == list(range(600))
    assert total(scores, perm) == pytest.approx(dense_optimum(scores)[1], rel=1e-12)


def test_small_matrices_go_to_the_dense_solver(monkeypatch):
    monkeypatch.setattr(assignment, "_candidates", lambda *a: pytest.fail("small matrices are solved densely"))
    scores = scores_like_weights(100, 50, 8)
    assert optimal_assignment(scores).tolist() == dense_optimum(scores)[0]
