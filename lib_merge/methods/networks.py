"""Batcher's odd-even merge networks, pruned to the ranks wanted: the comparisons of the median filter."""

from __future__ import annotations

import functools

# A comparator (i, j, keep_min, keep_max): slot i gets min(i, j), slot j gets max(i, j);
# a half that nothing downstream reads is not computed.
Network = tuple[tuple[tuple[int, int, bool, bool], ...], tuple[int, ...]]


def _odd_even_merge(a: list[int], b: list[int], comparators: list[tuple[int, int]]) -> list[int]:
    """Batcher's merge of two sorted runs of slots (any lengths); returns the slots in sorted order."""
    if not a or not b:
        return a + b
    if len(a) == 1 and len(b) == 1:
        comparators.append((a[0], b[0]))
        return [a[0], b[0]]
    evens = _odd_even_merge(a[0::2], b[0::2], comparators)
    odds = _odd_even_merge(a[1::2], b[1::2], comparators)
    merged = [evens[0]]
    i = 0
    while i < len(odds) and i + 1 < len(evens):
        comparators.append((odds[i], evens[i + 1]))
        merged += [odds[i], evens[i + 1]]
        i += 1
    return merged + odds[i:] + evens[i + 1 :]


@functools.cache  # a pure function of its arguments: the same few networks serve every tensor
def merge_network(m: int, n: int, ranks: tuple[int, ...] | None = None) -> Network:
    """Comparators merging sorted runs of m and n values, pruned to the output ranks asked for (0-based)."""
    comparators: list[tuple[int, int]] = []
    order = _odd_even_merge(list(range(m)), list(range(m, m + n)), comparators)
    wanted = range(m + n) if ranks is None else ranks
    live = {order[r] for r in wanted}
    kept = []
    for i, j in reversed(comparators):
        keep_min, keep_max = i in live, j in live
        if keep_min or keep_max:
            kept.append((i, j, keep_min, keep_max))
            live |= {i, j}
    return tuple(reversed(kept)), tuple(order[r] for r in wanted)


def band(m: int) -> tuple[int, ...]:
    """The ranks (0-based) of a merged pair that the selection of the middle of 3m values reads."""
    k = (3 * m + 1) // 2
    return tuple(range(k - m - 1, k))
