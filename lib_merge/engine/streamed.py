"""A key whose tree is one step of a many-model method: its inputs read a slice at a time.

Such methods (declared with streams=True: TIES, DARE, model stock, geometric median, N-model
average) take Operands (methods/operand.py). Each model file of the step comes to the method as
an Operand that reads the slices it asks for from the file (``pread``, from the page cache after
the first pass; the key's mapped view only asked the kernel to read it ahead), so the key's memory
does not grow with the number of models. An input that is itself a merge is computed whole first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lib_merge.engine.plan import KeyJob, Reduced, Step, is_leaf
from lib_merge.methods import operand
from lib_merge.methods.operand import Operand

READ_AHEAD_BYTES = 64 << 20  # per input file


def streams(tree: Reduced, device: torch.device) -> bool:
    """Whether the tree is a step that reads its inputs a slice at a time (on the CPU)."""
    return isinstance(tree, Step) and tree.method.streams and device.type == "cpu"


def held_bytes(job: KeyJob, device: torch.device, from_files: bool) -> int:
    """The memory a key holds while it is read and computed: its inputs and output, or for a step that
    reads model files a slice at a time, its output, the method's fp32 result (one input's size) and
    the slices with their buffers, whatever the number of models (an over-estimate keeps a worker
    waiting: the budget is shared by the keys computed and those finished but not yet written)."""
    tree = job.tree
    if not (from_files and streams(tree, device) and all(is_leaf(i) for i in tree.inputs)):
        return job.read_bytes + job.out.nbytes
    return job.out.nbytes + 4 * math.prod(job.out.shape) + 12 * operand.STREAM_ELEMENTS


def evaluate_streamed(
    step: Step,
    raw: dict[int, torch.Tensor],
    key: str,
    evaluate: Callable[[Reduced, dict[int, torch.Tensor], str], torch.Tensor],
    from_files: bool,
) -> torch.Tensor:
    """The step's fp32 result. `from_files`: the leaves are read from their files (no RAM cache holds them),
    where `raw` has the key's whole stored tensor (not an inpainting model's sliced channels, an fp8 table)."""
    args = []
    for node in step.inputs:
        if is_leaf(node) and from_files:
            # The bytes after this key in every input, read while it is computed: keys are planned in file
            # order, so these are the next keys' (a key's own read-ahead comes only when it starts).
            node.read_ahead(key, READ_AHEAD_BYTES)
        if is_leaf(node):
            tensor, info = raw[id(node)], node.info(key)
            whole = from_files and tuple(tensor.shape) == tuple(info.shape) and tensor.dtype == info.dtype
            args.append(Operand(tensor, node.range_reader(key) if whole else None))
        else:
            args.append(Operand(evaluate(node, raw, key)))
    extra = {"key": key} if step.method.needs_key else {}
    return step.method.fn(*args, **step.params, **extra)
