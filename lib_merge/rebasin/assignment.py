"""The assignment π maximising Σ S[i, π(i)] of a square score matrix, exact and fast for large ones
(docs/REBASIN.md §2, "The solver").

A dense solver (scipy's `linear_sum_assignment`) takes about 5 s for SDXL's 5120 feed-forward units,
and two independently trained SDXL models need it for every group. Only a few entries of each row can
be in the optimum, so the solver here works on candidates: each row's and each column's k best entries,
solved by scipy's sparse solver (LAPJVsp). Its answer σ is then proven optimal for the whole matrix by
LP duality: with potentials v (shortest paths over the candidates in the graph whose edge σ(i) → j costs
S[i, σ(i)] − S[i, j]),

    v[j] ≤ v[σ(i)] + S[i, σ(i)] − S[i, j]       for every i and j

makes u[i] = v[σ(i)] − S[i, σ(i)], v a feasible dual solution that σ meets with equality, so no
assignment scores more. Entries that break the inequality join the candidates and the sparse problem is
solved again (with twice as many per row and column where the candidates hold no full matching); without
a proof after a few rounds, the dense solver answers. Either way the answer is the dense solver's optimum.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

DENSE_BELOW = 512  # smaller matrices go to the dense solver (it takes milliseconds there)
CANDIDATES = 32  # best entries taken from each row and each column
ROUNDS = 6  # sparse solves before the dense solver takes over
CHECK_ROWS = 256  # rows per block of the full-matrix check (bounds its temporary memory)
TOLERANCE = 1e-9  # of max |S|: a dual gap below this per entry is rounding (the scores are fp32)


def dense_assignment(scores: torch.Tensor) -> torch.Tensor:
    """scipy's dense solver (exact, in float64)."""
    _, cols = linear_sum_assignment(scores.detach().cpu().double().numpy(), maximize=True)
    return torch.from_numpy(cols.astype(np.int64))


def optimal_assignment(
    scores: torch.Tensor, candidates: int = CANDIDATES, dense_below: int = DENSE_BELOW, rounds: int = ROUNDS
) -> torch.Tensor:
    """π (int64) with π[i] the column of row i, maximising Σ S[i, π(i)]."""
    s = scores.detach().cpu().float()
    n = s.shape[0]
    if n < max(dense_below, 2) or candidates >= n:
        return dense_assignment(s)
    k = candidates
    edges = _candidates(s, k)
    for _ in range(rounds):
        rows, cols = edges // n, edges % n
        sigma = _sparse_solve(s, rows, cols)
        if sigma is None:  # no full matching among the candidates: take more
            k *= 2
            if k >= n:
                break
            edges = torch.unique(torch.cat([edges, _candidates(s, k)]))
            continue
        v = _potentials(s, sigma, rows, cols)
        if v is None:
            break
        broken = _violations(s, sigma, v)
        if broken.numel() == 0:
            return sigma
        edges = torch.unique(torch.cat([edges, broken]))
    return dense_assignment(s)


def _candidates(s: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices i·n + j of each row's and each column's k largest entries."""
    n = s.shape[0]
    by_row = s.topk(k, dim=1).indices + torch.arange(n).unsqueeze(1) * n
    by_col = s.T.contiguous().topk(k, dim=1).indices * n + torch.arange(n).unsqueeze(1)
    return torch.unique(torch.cat([by_row.reshape(-1), by_col.reshape(-1)]))


def _sparse_solve(s: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | None:
    """The best full matching among the candidates, or None if there is none."""
    n = s.shape[0]
    w = s[rows, cols].double()
    # The sparse solver takes only non-zero weights as edges, so every weight is made positive: a
    # constant added to a row changes no assignment's rank.
    low = torch.full((n,), float("inf"), dtype=torch.float64).scatter_reduce(0, rows, w, "amin")
    span = float(w.max() - w.min()) or 1.0
    graph = scipy.sparse.csr_matrix(((w - low[rows] + span).numpy(), (rows.numpy(), cols.numpy())), shape=(n, n))
    try:
        _, matched = min_weight_full_bipartite_matching(graph, maximize=True)
    except ValueError:  # no full matching among the candidates
        return None
    return torch.from_numpy(np.asarray(matched, dtype=np.int64))


def _potentials(s: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | None:
    """Shortest-path distances from a source joined to every column by a zero-weight edge (Bellman-Ford,
    relaxing the edges out of the columns that changed in the last pass), or None when they do not
    settle: a negative cycle, so σ is not optimal even among the candidates."""
    n = s.shape[0]
    moved = cols != sigma[rows]
    r, c = rows[moved], cols[moved]
    src = sigma[r]
    w = s[r, src].double() - s[r, c].double()
    order = torch.argsort(c, stable=True)  # edges by head: each pass takes one minimum per head
    heads, tails, weights = c[order].numpy(), src[order].numpy(), w[order].numpy()
    d = np.zeros(n)
    active = np.ones(n, dtype=bool)
    for _ in range(n):
        live = active[tails]
        if not live.any():
            return torch.from_numpy(d)
        h = heads[live]
        reached = d[tails[live]] + weights[live]
        starts = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1])))
        best, at = np.minimum.reduceat(reached, starts), h[starts]
        shorter = best < d[at]
        active = np.zeros(n, dtype=bool)
        active[at[shorter]] = True
        d[at[shorter]] = best[shorter]
    return None


def _violations(s: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Flat indices of the entries that break v[j] ≤ v[σ(i)] + S[i, σ(i)] − S[i, j] beyond rounding."""
    n = s.shape[0]
    tolerance = TOLERANCE * float(s.abs().max())
    bound = v[sigma] + s[torch.arange(n), sigma].double()  # v[σ(i)] + S[i, σ(i)]
    found = []
    for start in range(0, n, CHECK_ROWS):
        block = s[start : start + CHECK_ROWS].double()
        block.add_(v).neg_().add_(bound[start : start + CHECK_ROWS].unsqueeze(1))  # the slack
        i, j = torch.nonzero(block < -tolerance, as_tuple=True)
        if i.numel():
            found.append((i + start) * n + j)
    return torch.cat(found) if found else torch.empty(0, dtype=torch.int64)
