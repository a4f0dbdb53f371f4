"""A key whose tree is one step of a many-model method: its inputs read whole or a slice at a time.

Such methods (declared with streams=True: TIES, DARE, model stock, geometric median, N-model
average) take Operands (methods/operand.py). Where a key's inputs fit the arena (engine/arena.py),
the engine's reader thread reads each model file's tensor whole past the page cache, and the
Operands read their slices from memory, for every pass of the method. Larger keys, and systems
without O_DIRECT, get an Operand per model file that reads the slices it asks for from the file
(``pread``, from the page cache after the first pass), so the key's memory does not grow with the
number of models. An input that is itself a merge is computed whole first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lib_merge.engine.arena import ARENA_BYTES
from lib_merge.engine.plan import KeyJob, Reduced, Step, is_leaf
from lib_merge.methods import operand
from lib_merge.methods.operand import Operand

READ_AHEAD_BYTES = 64 << 20  # per input file
# A key whose inputs together fit the arena (with their alignment) is read whole, past the page cache
# (SafetensorsFile.read_direct), once however many passes the method makes. Larger ones (64 inputs of SD1's
# largest convolution) are read a slice at a time.
WHOLE_READ_MAX = ARENA_BYTES - (1 << 20)


def streams(tree: Reduced, device: torch.device) -> bool:
    """Whether the tree is a step that reads its inputs a slice at a time (on the CPU)."""
    return isinstance(tree, Step) and tree.method.streams and device.type == "cpu"


def reads_whole(tree: Reduced, key: str, device: torch.device, from_files: bool) -> bool:
    """Whether the step's model files are read whole for this key (past the page cache), not a slice at a time:
    where they fit the arena and the system reads past the page cache (O_DIRECT)."""
    if not (from_files and streams(tree, device) and all(is_leaf(i) for i in tree.inputs)):
        return False
    sizes = {id(leaf): leaf.info(key).nbytes for leaf in tree.inputs}
    return sum(sizes.values()) <= WHOLE_READ_MAX and all(leaf.direct_bytes(key) for leaf in tree.inputs)


def held_bytes(job: KeyJob, device: torch.device, from_files: bool) -> int:
    """The memory a key holds while it is read and computed: its inputs and output, or for a step that
    reads model files a slice at a time, its output, the method's fp32 result (one input's size) and
    the slices with their buffers, whatever the number of models (an over-estimate keeps a worker
    waiting: the budget is shared by the keys computed and those finished but not yet written). A key
    read whole holds its inputs and result in the arena, which has a budget of its own (engine/arena.py)."""
    tree = job.tree
    if not (from_files and streams(tree, device) and all(is_leaf(i) for i in tree.inputs)):
        return job.read_bytes + job.out.nbytes
    if reads_whole(tree, job.key, device, from_files):  # inputs and result in the arena; output and slices here
        return job.out.nbytes + 8 * operand.STREAM_ELEMENTS
    return job.out.nbytes + 4 * math.prod(job.out.shape) + 12 * operand.STREAM_ELEMENTS


def evaluate_streamed(
    step: Step,
    raw: dict[int, torch.Tensor],
    key: str,
    evaluate: Callable[[Reduced, dict[int, torch.Tensor], str], torch.Tensor],
    from_files: bool,
    result: torch.Tensor | None = None,
) -> torch.Tensor:
    """The step's fp32 result. `from_files`: the leaves are read from their files (no RAM cache holds them, and
    they were not read whole into the arena), where `raw` has the key's whole stored tensor (not an inpainting
    model's sliced channels, an fp8 table). `result`: fp32 memory lent for the result (operand.result_like)."""
    args = []
    for node in step.inputs:
        if is_leaf(node) and from_files and not node.direct_bytes(key):
            # The bytes after this key in every input, read while it is computed: keys are planned in file
            # order, so these are the next keys' (a key's own read-ahead comes only when it starts). Not where
            # the next keys are read past the page cache: their bytes would be read twice.
            node.read_ahead(key, READ_AHEAD_BYTES)
        if is_leaf(node):
            tensor, info = raw[id(node)], node.info(key)
            whole = from_files and tuple(tensor.shape) == tuple(info.shape) and tensor.dtype == info.dtype
            args.append(Operand(tensor, node.range_reader(key) if whole else None, None if args else result))
        else:
            args.append(Operand(evaluate(node, raw, key), None, None if args else result))
    extra = {"key": key} if step.method.needs_key else {}
    return step.method.fn(*args, **step.params, **extra)
