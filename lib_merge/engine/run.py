"""Running a merge plan key by key into a sink, with reads and compute overlapped.

Worker threads read a key's inputs (``pread`` releases the GIL) and compute it in bounded
fp32 chunks; the calling thread hands results to the sink in plan order. The bytes of
keys in flight are capped, so peak memory does not grow with the model. Many-model keys
that fit the arena are read by a thread of their own, ahead of the workers (engine/arena.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import torch

from lib_merge.engine.arena import Arena, WholeRead
from lib_merge.engine.budget import ByteBudget, in_flight_bytes
from lib_merge.engine.fp8_table import by_table, table_leaves
from lib_merge.engine.options import CancelToken, EngineOptions, EngineReport, Sink
from lib_merge.engine.plan import KeyJob, MergePlan, Reduced, Step, bounded_tree, elementwise_tree, is_leaf, leaf_uses
from lib_merge.engine.progress import ProgressEvent
from lib_merge.engine.streamed import evaluate_streamed, held_bytes, reads_whole, streams
from lib_merge.engine.threads import worker_pool
from lib_merge.errors import NonFiniteError
from lib_merge.io.cache import TensorCache, peak_magnitude, read_through
from lib_merge.io.device import Transfer, check_device, uses_pinned
from lib_merge.io.dtypes import is_fp8
from lib_merge.io.fp8 import to_fp8, widen
from lib_merge.io.writer import PlannedTensor

CHUNK_ELEMENTS = 1 << 17  # 512 KiB of fp32 per operand: inputs, result and temporaries stay in L2
IO_THREADS = 4  # reads of a key's model files side by side (engine/arena.py)
DEVICE_CHUNK_ELEMENTS = 1 << 22  # 16 MiB of fp32 per operand on a GPU: few kernel launches and copies per tensor


def run_plan(plan: MergePlan, sink: Sink, options: EngineOptions | None = None) -> EngineReport:
    """Evaluate every job in order into ``sink``; on any error or cancel the sink is aborted."""
    options = options or EngineOptions()
    device = check_device(options.device)
    report = EngineReport(keys=len(plan.jobs), bytes_total=sum(t.nbytes for t in plan.tensors))
    cancel = options.cancel or CancelToken()
    write_into = getattr(sink, "write_into", None)  # a sink whose own tensors take results directly
    pending: deque[tuple[KeyJob, Future, int]] = deque()
    done = 0
    from lib_merge.engine.prepass import match_rebasin, run_prepass

    match_rebasin(plan, options, cancel, report)
    run_prepass(plan, options, cancel)
    source = "reading from disk" if _reads_disk(plan, options.cache) else "inputs in RAM"
    try:  # from the sink's first step on (a file sink's temporary file), any exit aborts it
        sink.begin(plan.tensors)
        # A sink whose tensors are inference tensors (Forge's) is written in inference mode, by the workers too.
        inference = bool(getattr(sink, "inference", False))
        compute = _KeyComputer(
            device, options.compute_dtype, options.nonfinite, report, options.cache, write_into, inference,
            options.clamp,
        )  # fmt: skip
        budget = ByteBudget(in_flight_bytes(any(compute.reads_whole(job) for job in plan.jobs)))
        drain = functools.partial(_drain_one, pending, sink, budget, report, options, source)
        # One reader fills the arena with many-model keys in plan order while the workers compute.
        with (
            worker_pool(options.threads, "alloy-merge") as pool,
            worker_pool(1, "alloy-read") as reader,
            worker_pool(IO_THREADS, "alloy-io") as io,
        ):
            try:
                for job in plan.jobs:
                    cancel.check()
                    cost = held_bytes(job, device, options.cache is None)
                    # Hand finished keys to the sink until this one fits in the budget.
                    while pending and not budget.try_acquire(cost):
                        done = drain(done)
                    if not pending:
                        budget.acquire_anyway(cost)
                    read = (
                        reader.submit(compute.arena.read, job, cancel.check, io) if compute.reads_whole(job) else None
                    )
                    pending.append((job, pool.submit(compute, job, cancel, read), cost))
                while pending:
                    done = drain(done)
            except BaseException:
                cancel.cancel()
                for _, fut, _ in pending:
                    fut.cancel()
                raise
    except BaseException:
        sink.abort()
        raise
    return report


def _reads_disk(plan: MergePlan, cache: TensorCache | None) -> bool:
    """Whether some input tensor is neither in memory already nor in the RAM cache (for the progress line)."""
    for job in plan.jobs:
        for leaf in job.leaves():
            if leaf.cache_identity is not None and (cache is None or not cache.contains(leaf.cache_identity, job.key)):
                return True
    return False


def _drain_one(
    pending, sink: Sink, budget, report: EngineReport, options: EngineOptions, source: str, done: int
) -> int:
    job, fut, cost = pending.popleft()
    tensor = fut.result()
    sink.put(job.key, tensor)
    report.bytes_written += job.out.nbytes
    budget.release(cost)
    done += 1
    if options.progress:
        event = ProgressEvent("merging", done, report.keys, "tensors", report.bytes_written, report.bytes_total, source)
        options.progress(event)
    return done


class _KeyComputer:
    def __init__(
        self,
        device: torch.device,
        cdt: torch.dtype,
        nonfinite: str,
        report: EngineReport,
        cache: TensorCache | None = None,
        write_into: Callable[[str, torch.dtype], torch.Tensor | None] | None = None,
        inference: bool = False,
        clamp: bool = False,
    ):
        self.cache = cache
        self.clamp = clamp
        self.inference = inference
        self.device = device
        self.on_host = device.type == "cpu" and not uses_pinned(device)  # computed where it is read
        self.chunk = DEVICE_CHUNK_ELEMENTS if uses_pinned(device) else CHUNK_ELEMENTS
        self.cdt = cdt
        self.nonfinite = nonfinite
        self.report = report
        self.lock = threading.Lock()
        self.local = threading.local()  # each worker's scratch buffers
        self.write_into = write_into  # the sink's own tensor for a key, when the result may go straight there
        self.arena = Arena()  # many-model keys read whole (engine/arena.py)

    def reads_whole(self, job: KeyJob) -> bool:
        """Whether the key's inputs are read whole into the arena by the reader thread (engine/arena.py)."""
        merging = job.cast and not is_leaf(job.tree)
        return merging and self.cache is None and self.on_host and reads_whole(job.tree, job.key, self.device, True)

    def __call__(self, job: KeyJob, cancel: CancelToken, whole: Future | None = None) -> torch.Tensor:
        """The key's result; `whole`: its inputs, being read into the arena."""
        read = whole.result() if whole is not None else None
        try:
            with torch.inference_mode(self.inference):
                if job.cast and is_fp8(job.out.dtype):
                    return self._fp8(job, cancel, read)
                return self._compute(job, cancel, None, read)
        finally:
            if read is not None:
                self.arena.give_back(read.region)

    def _fp8(self, job: KeyJob, cancel: CancelToken, read: WholeRead | None) -> torch.Tensor:
        """An fp8 output: computed as fp32 (fp8 is a storage format), then range-checked as it is cast."""
        wide = dataclasses.replace(job, out=PlannedTensor(job.key, torch.float32, job.out.shape))
        result = to_fp8(self._compute(wide, cancel, job.out.dtype, read), job.out.dtype, job.key, self.clamp)
        direct = self._direct(job.key, job.out.dtype)
        return direct.copy_(result) if direct is not None else result

    def _compute(
        self, job: KeyJob, cancel: CancelToken, fp8_out: torch.dtype | None = None, read: WholeRead | None = None
    ) -> torch.Tensor:
        cancel.check()
        leaves = job.leaves()
        merging = job.cast and not is_leaf(job.tree)
        if read is not None:
            self.local.whole = read  # for the step in _eval
            try:
                result = self._from_raw(job, read.raw, leaves, fp8_out)
            finally:
                self.local.whole = None
            return result.clone() if self.arena.holds(result) else result  # the region goes to the next key
        # A merge's inputs die with this call: without a cache they are mapped, not copied,
        # and their pages dropped afterwards. Tensors passed on as they are get a real read.
        mapped = merging and self.cache is None
        if self.cache is not None:
            # Leaves without a cache identity live in memory already (a loaded model's own weights).
            raw = {id(s): read_through(self.cache if s.cache_identity else None, s, job.key) for s in leaves}
        elif mapped:
            raw = {id(s): s.view(job.key) for s in leaves}
        else:
            raw = {id(s): s.read(job.key) for s in leaves}
        try:
            return self._from_raw(job, raw, leaves, fp8_out)
        finally:
            if mapped:
                for s in leaves:
                    s.release(job.key)

    def _from_raw(
        self, job: KeyJob, raw: dict[int, torch.Tensor], leaves: list, fp8_out: torch.dtype | None
    ) -> torch.Tensor:
        """The key's result from its inputs' stored tensors."""
        merging = job.cast and not is_leaf(job.tree)
        self._count(raw, job)
        if not job.cast:
            return raw[id(job.tree)]
        table = table_leaves(job.tree, raw, leaves) if fp8_out is not None and merging else None
        if table:  # fp8 to fp8: each element looked up among the key's few possible results
            evaluate = functools.partial(self._eval, job.tree, key=job.key)
            looked = by_table(job.tree, raw, table, fp8_out, self.clamp, evaluate)
            if looked is not None:
                return looked
        raw = {k: widen(t) if is_fp8(t.dtype) else t for k, t in raw.items()}  # computed from fp16 up
        if not merging and not job.inpaint_channels:
            direct = self._direct(job.key, job.out.dtype)
            if direct is not None:
                return direct.copy_(raw[id(job.tree)].view(direct.shape))
            return raw[id(job.tree)].to(job.out.dtype, copy=self.cache is not None)
        return self._merge(job, raw)

    def _count(self, raw: dict[int, torch.Tensor], job: KeyJob) -> dict[int, torch.Tensor]:
        with self.lock:
            self.report.bytes_read += sum(t.numel() * t.element_size() for t in raw.values())
            if job.cast:
                self.report.merged += 1
            else:
                self.report.copied += 1
        return raw

    def _merge(self, job: KeyJob, raw: dict[int, torch.Tensor]) -> torch.Tensor:
        n = job.inpaint_channels
        if n:
            # Inpainting/pix2pix: merge the first n input channels; the rest keep A.
            sliced = {k: t[:, :n].contiguous() for k, t in raw.items()}
            base = job.leaves()[0]
            out = raw[id(base)].to(job.out.dtype, copy=True)
            part = self._elementwise if elementwise_tree(job.tree) else self._whole
            out[:, :n] = part(job, sliced, tuple(next(iter(sliced.values())).shape))
            return out
        if not elementwise_tree(job.tree) or (self.on_host and streams(job.tree, self.device)):
            return self._whole(job, raw, job.out.shape)
        return self._elementwise(job, raw, job.out.shape)

    def _whole(self, job: KeyJob, raw: dict[int, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        """Methods that look at a whole tensor (norms, filters, slices, one draw per key)."""
        stage = self._stage()
        if stage is None:
            out = self._eval(job.tree, raw, job.key).to("cpu", job.out.dtype).reshape(shape).contiguous()
        else:  # the inputs to the device and the result back through page-locked buffers
            out = torch.empty(shape, dtype=job.out.dtype)
            with stage.using():
                moved = {k: stage.to_device(t) for k, t in raw.items()}
                stage.to_host(self._eval(job.tree, moved, job.key), out)
        self._check_finite(out, job, raw)
        return out

    def _elementwise(self, job: KeyJob, raw: dict[int, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        """Evaluate the key's tree in cache-sized chunks straight into the output tensor."""
        odt = job.out.dtype
        direct = self._direct(job.key, odt) if not job.inpaint_channels else None
        fused = self._fused_step(job.tree, raw, odt)
        check = not self._finite_by_bounds(job, odt)
        if fused is not None and not check:  # no chunk to look at while it is in cache: one call
            # As few torch calls as can be: each lets another thread take the GIL (docs/PERFORMANCE.md).
            out = direct if direct is not None else torch.empty(shape, dtype=odt)
            inputs, target = [raw[id(i)] for i in fused.inputs], out
            if any(t.shape != out.shape for t in inputs):  # stored in another shape of the same size
                inputs, target = [t.reshape(-1) for t in inputs], out.view(-1)
            fused.method.fused(*inputs, out=target, **fused.params)
            return out
        flat = {k: t.reshape(-1) for k, t in raw.items()}
        numel = next(iter(flat.values())).numel()
        out = direct.view(-1) if direct is not None else torch.empty(numel, dtype=odt)
        # Output in the compute dtype: the first input's copy is made into the output itself, and
        # the methods (which may overwrite their first argument) compute there.
        in_place = odt == self.cdt and self.on_host
        stage = self._stage()
        with stage.using() if stage is not None else contextlib.nullcontext():
            buffers = self._scratch(leaf_uses(job.tree)) if fused is None else []
            for start in range(0, numel, self.chunk):
                end = min(numel, start + self.chunk)
                chunk = {k: t[start:end] for k, t in flat.items()}
                if stage is not None:  # to the GPU in the stored dtype (fp16 crosses the bus as fp16)
                    chunk = {k: stage.to_device(t) for k, t in chunk.items()}
                target = out[start:end]
                if fused is not None:
                    fused.method.fused(*(chunk[id(i)] for i in fused.inputs), out=target, **fused.params)
                else:
                    result = self._eval(job.tree, chunk, job.key, target if in_place else None, iter(buffers))
                    if stage is not None:
                        stage.to_host(result, target)
                    elif result.data_ptr() != target.data_ptr():
                        target.copy_(result)
                if check:
                    self._check_finite(target, job, chunk)
        return out.reshape(shape)

    def _direct(self, key: str, dtype: torch.dtype) -> torch.Tensor | None:
        """The sink's own tensor to put the key's result in, where it is on the CPU or on this device."""
        direct = self.write_into(key, dtype) if self.write_into else None
        if direct is None or direct.device.type == "cpu" or direct.device == self.device:
            return direct
        return None

    def _stage(self) -> Transfer | None:
        """This worker's page-locked buffers and stream, when chunks go to a CUDA device (io/device.py)."""
        if not uses_pinned(self.device):
            return None
        stage = getattr(self.local, "stage", None)
        if stage is None:
            stage = self.local.stage = Transfer(self.device)
        return stage

    def _finite_by_bounds(self, job: KeyJob, odt: torch.dtype) -> bool:
        """Whether the result is finite without looking: a convex combination of inputs whose
        largest magnitudes are known (RAM-resident inputs, checked once when they came in) and
        far from the output dtype's overflow."""
        if not bounded_tree(job.tree):
            return False
        limit = torch.finfo(odt).max / 4
        for source in job.leaves():
            if source.cache_identity is None:
                peak = source.peak(job.key)
            else:
                peak = self.cache.peak(source.cache_identity, job.key) if self.cache else math.inf
            if not peak <= limit:  # NaN fails too
                return False
        return True

    def _fused_step(self, tree: Reduced, raw: dict[int, torch.Tensor], odt: torch.dtype) -> Step | None:
        """A single step whose method computes in fp32 internally on fp16/bf16 tensors and rounds
        once, or widens them into an fp32 output itself: the same bits as converting to fp32,
        computing and casting, without the copies."""
        if not isinstance(tree, Step) or tree.method.fused is None or not self.on_host:
            return None
        if self.cdt != torch.float32 or odt not in (torch.float16, torch.bfloat16, torch.float32):
            return None
        narrow = (torch.float16, torch.bfloat16) if odt == torch.float32 else (odt,)
        if not all(is_leaf(i) and raw[id(i)].dtype in narrow for i in tree.inputs):
            return None
        return tree

    def _scratch(self, count: int) -> list[torch.Tensor]:
        """This worker's chunk-sized buffers in the compute dtype, made once per merge: a live merge into
        fp32 parameters runs some ten thousand chunks, and a fresh copy of each input for each of them
        is an allocation (and pages to fault in) every time."""
        buffers = getattr(self.local, "scratch", [])
        while len(buffers) < count:
            buffers.append(torch.empty(self.chunk, dtype=self.cdt, device=self.device))
        self.local.scratch = buffers
        return buffers[:count]

    def _eval(
        self,
        node: Reduced,
        chunk: dict[int, torch.Tensor],
        key: str,
        into: torch.Tensor | None = None,
        buffers: Iterator[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The tree's value on `chunk`; the first leaf's copy goes into `into` when given, the other
        leaves' into the next of `buffers` (chunk-sized) when given."""
        if is_leaf(node):
            source = chunk[id(node)]
            if into is not None:
                return into.copy_(source)
            # A copy of its own for each use: methods write into their inputs.
            if buffers is not None:
                return next(buffers)[: source.numel()].view(source.shape).copy_(source)
            return source.to(self.device, self.cdt, copy=True)
        if buffers is None and self.on_host and streams(node, self.device):  # many-model methods: slice by slice
            read, self.local.whole = getattr(self.local, "whole", None), None  # the key's inputs read whole, if so
            from_files = self.cache is None and read is None
            return evaluate_streamed(node, chunk, key, self._eval, from_files, read.result if read else None)
        args = [self._eval(i, chunk, key, into if n == 0 else None, buffers) for n, i in enumerate(node.inputs)]
        extra = {"key": key} if node.method.needs_key else {}
        return node.method.fn(*args, **node.params, **extra)

    def _check_finite(self, result: torch.Tensor, job: KeyJob, chunk: dict[int, torch.Tensor]) -> None:
        """Checked on the output dtype, so an overflow of the cast (beyond ±65504 in fp16) counts too."""
        # The extremes in one read-only pass, finite exactly when every element is (a NaN
        # anywhere makes them NaN): half the cost of an fp32 sum, and no false alarm.
        if self.nonfinite == "ignore" or math.isfinite(peak_magnitude(result)):
            return
        if self.nonfinite == "keep_a":
            result.copy_(chunk[id(job.leaves()[0])].to(result.dtype))
            with self.lock:
                self.report.nonfinite_kept.append(job.key)
            return
        bad = int((~torch.isfinite(result)).sum())
        raise NonFiniteError(f"key {job.key} produced {bad} NaN/Inf values (method {job.tree.method.name})")
