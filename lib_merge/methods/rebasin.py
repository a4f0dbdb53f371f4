"""rebasin(B, ref=A): B with its hidden units reordered to line up with A's (lib_merge/rebasin).

The permutations come from matching B to A before the merge; the engine then reads B through
them (rebasin/permuted.py), calling this function on every key a permutation touches. Keys no
group touches are B's own tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch

from lib_merge.methods.registry import Bounds, merge_method

Sweeps = Annotated[int, Bounds(1, 100, enforce=True)]


@merge_method("Re-basin", "op", references=("ref",))
def rebasin(
    model: torch.Tensor, *, max_sweeps: Sweeps = 10, permutation: Sequence[tuple[int, torch.Tensor]]
) -> torch.Tensor:
    """The tensor with each (axis, index) of the key's permutation applied: out[i] = model[index[i]]."""
    for axis, index in permutation:
        model = model.index_select(axis, index.to(model.device))
    return model
