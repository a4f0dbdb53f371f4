"""Merging into a loaded torch model in place, with an exact restore.

Host-independent: the WebUI adapter hands over its model object, whose parameter names equal
the checkpoint's once every ``.wrapped`` segment (the WebUI's text-encoder hijack) is removed,
or a `PatchTarget` that maps checkpoint keys to the host's own tensors (Forge). Each tensor is
looked up when the patch starts, backed up once on the CPU, and written in place, keeping dtype
and device. Model A is read from those backups, model B and the rest from the RAM cache: a
repeated merge touches no disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from dataclasses import dataclass, field
from typing import Protocol

import torch

from lib_merge.engine.bind import BoundRecipe, bind_recipe, hashed_recipe
from lib_merge.engine.options import EngineOptions, EngineReport
from lib_merge.engine.plan import Leaf, MergePlan, Reduced, Step, is_leaf, plan_merge
from lib_merge.engine.run import run_plan
from lib_merge.errors import AlloyError, HostPatchError
from lib_merge.io.cache import peak_magnitude, read_through
from lib_merge.io.dtypes import itemsize
from lib_merge.io.source import SourceModel
from lib_merge.io.writer import PlannedTensor
from lib_merge.recipe.hashed import HashedRecipe
from lib_merge.recipe.nodes import Node

COMPARE_CHUNK = 1 << 18  # elements narrowed and compared per step (1 MiB of fp32: in L2)


def canonical_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "wrapped")


class PatchTarget(Protocol):
    """What a live merge writes into: checkpoint key -> the host's tensor (or a `StoredParts`)."""

    unused_keys: frozenset[str]  # checkpoint keys the host does not load: a merge leaves them out

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]: ...


def live_tensors(model: torch.nn.Module | PatchTarget) -> dict[str, torch.Tensor]:
    """Checkpoint key -> tensor to patch, looked up now (hosts may swap parameter objects)."""
    if isinstance(model, torch.nn.Module):
        return model_tensors(model)
    return model.checkpoint_tensors()


def writing(tensor) -> contextlib.AbstractContextManager:
    """The grad mode a write into `tensor` needs: Forge builds its models under inference mode, and
    an inference tensor may only be changed inside it."""
    return torch.inference_mode() if tensor.is_inference() else torch.no_grad()


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoint key -> the model's own tensor; a tensor reachable under two names is listed once."""
    found: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False)
    ):
        key = canonical_name(name)
        if key in found or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        found[key] = tensor
    return found


@dataclass
class LiveBackup:
    """Original values of every tensor patched since the model was loaded, for an exact restore.

    Kept in RAM (CPU) up to `limit` bytes: in the checkpoint's own dtype when that holds the loaded
    value exactly (an fp16 file in fp32 parameters: half the memory), else in the parameter's dtype.
    Beyond the limit, a tensor found equal to model A's file is restored from that file instead (an
    SDXL model in fp32 leaves no room for a second copy on a 24 GB machine); one the host changed is
    kept in RAM all the same. The copies stay after a restore: later merges read model A from them
    instead of from disk. A new checkpoint load makes them void (a new LiveBackup).
    """

    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    patched: set[str] = field(default_factory=set)  # keys that differ from their original now
    peaks: dict[str, float] = field(default_factory=dict)  # largest |value| of each original in RAM
    on_file: set[str] = field(default_factory=set)  # keys whose original is model A's file, verified
    limit: int | None = None  # bytes of RAM copies; None: no limit
    file: tuple[str, int, int] | None = None  # model A's path, size and mtime, for the keys on file
    nbytes: int = 0  # of the RAM copies
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, key: str, tensor: torch.Tensor, source: SourceModel) -> torch.Tensor | None:
        """The key's loaded value, backed up from the model's `tensor` on first use; None when it is
        model A's file value and not at hand (read it from the file)."""
        found = self.originals.get(key)
        if found is not None or key in self.on_file:
            return found
        stored = source.info(key).dtype if key in source else tensor.dtype
        size = _backup_size(tensor, stored)
        with self._lock:
            room = self.limit is None or self.nbytes + size <= self.limit
            if room:
                self.nbytes += size  # claimed before the copy, so two workers cannot both take the last room
        if not room and key in source:
            value = source.read(key)  # compared once, and handed on: the caller need not read it again
            if tuple(value.shape) == tuple(tensor.shape) and torch.equal(
                value.to(tensor.device, tensor.dtype), tensor.detach()
            ):
                self.on_file.add(key)
                self.file = (source.path, *source.identity())
                return value
        copy = _exact_copy(tensor, stored)
        with self._lock:
            self.nbytes += copy.numel() * copy.element_size() - (size if room else 0)
        self.peaks[key] = peak_magnitude(copy)
        self.originals[key] = copy
        return copy

    def ram_after(self, keys: list[str], tensors: dict[str, torch.Tensor], source: SourceModel) -> int:
        """What the RAM copies will hold once `keys` are backed up too (narrowed where the file is)."""
        more = sum(
            _backup_size(tensors[key], source.info(key).dtype if key in source else tensors[key].dtype)
            for key in keys
            if key not in self.originals and key not in self.on_file
        )
        total = self.nbytes + more
        return total if self.limit is None else min(total, max(self.limit, self.nbytes))

    def restore(
        self,
        model: torch.nn.Module | PatchTarget,
        keep: set[str] | frozenset[str] = frozenset(),
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> int:
        """Put back every patched tensor except those in `keep` (the next merge writes them anyway)."""
        tensors = tensors if tensors is not None else live_tensors(model)
        back = [key for key in self.patched if key not in keep]
        from_file = [key for key in back if key in self.on_file]
        source = self._open_file() if from_file else None
        try:
            for key in back:
                original = self.originals.get(key)
                with writing(tensors[key]):
                    tensors[key].copy_(original if original is not None else source.read(key))
        finally:
            if source is not None:
                source.close()
        self.patched.difference_update(back)
        return len(back)

    def _open_file(self) -> SourceModel:
        path, size, mtime = self.file
        try:
            source = SourceModel(path)
        except (OSError, AlloyError) as e:
            raise HostPatchError(f"cannot restore from {path}: {e}; load the checkpoint again") from None
        if source.identity() != (size, mtime):
            source.close()
            raise HostPatchError(f"{path} changed on disk since it was loaded: load the checkpoint again to restore it")
        return source


def _backup_size(tensor: torch.Tensor, stored: torch.dtype) -> int:
    """Bytes of a RAM backup: narrowed to the file's dtype where that is the smaller (see _exact_copy)."""
    return tensor.numel() * min(itemsize(stored), itemsize(tensor.dtype))


def _exact_copy(tensor: torch.Tensor, stored: torch.dtype) -> torch.Tensor:
    """A CPU copy, narrowed to the stored dtype when the round trip gives the same bits."""
    original = tensor.detach()
    floats = original.dtype.is_floating_point and stored.is_floating_point
    if floats and itemsize(stored) < itemsize(original.dtype):
        narrow = _narrow_copy(original, stored)
        if narrow is not None:
            return narrow
    return original.to("cpu", copy=True)


def _narrow_copy(original: torch.Tensor, stored: torch.dtype) -> torch.Tensor | None:
    """`original` in the narrower `stored` dtype, or None where a value does not survive the round trip.

    On the CPU it is made and checked a chunk at a time: the original is read once, and no widened copy
    of the whole tensor is made (gigabytes of fresh pages for a model, each zeroed by the kernel)."""
    if original.device.type != "cpu":  # one transfer; the device's allocator keeps the temporary
        narrow = original.to("cpu", stored, copy=True)
        return narrow if torch.equal(narrow.to(original.device, original.dtype), original) else None
    flat = original.reshape(-1)
    narrow = torch.empty(flat.shape, dtype=stored)
    buffer = torch.empty(min(COMPARE_CHUNK, flat.numel()), dtype=original.dtype)
    for start in range(0, flat.numel(), COMPARE_CHUNK):
        end = min(flat.numel(), start + COMPARE_CHUNK)
        part, widened = narrow[start:end], buffer[: end - start]
        part.copy_(flat[start:end])
        widened.copy_(part)
        if not torch.equal(widened, flat[start:end]):
            return None
    return narrow.view(original.shape)


class ResidentModel:
    """Model A read from memory: the loaded model's values through its backups, not from disk.

    Exact wherever the backup holds the checkpoint's dtype (its values are then the file's, as the
    host loaded them from it); a key the host narrowed (an fp32 file in fp16 parameters) is read
    from the file through the RAM cache instead.
    """

    cache_identity = None  # in memory already: the engine does not cache it again

    def __init__(self, source: SourceModel, backup: LiveBackup, tensors: dict[str, torch.Tensor], cache=None):
        self.source, self.backup, self.tensors, self.cache = source, backup, tensors, cache
        self.name = source.name

    def __contains__(self, key: str) -> bool:
        return key in self.source

    def info(self, key: str):
        return self.source.info(key)

    def read(self, key: str) -> torch.Tensor:
        tensor = self.tensors.get(key)
        if tensor is None:  # not in the loaded model: the sink refuses the merge before any write
            return read_through(self.cache, self.source, key)
        kept = self.backup.take(key, tensor, self.source)
        exact = kept is not None and kept.dtype == self.source.info(key).dtype
        return kept if exact else read_through(self.cache, self.source, key)

    view = read

    def peak(self, key: str) -> float:
        """The largest |value| of what `read` gives (inf when unknown)."""
        kept = self.backup.originals.get(key)
        if kept is not None and kept.dtype == self.source.info(key).dtype:
            return self.backup.peaks[key]
        return self.cache.peak(self.source.cache_identity, key) if self.cache else math.inf

    def release(self, key: str) -> None:
        pass


class LiveModelSink:
    """Engine sink that writes each merged tensor into the model's own parameter.

    Where a parameter is a contiguous tensor of the result's dtype, on the CPU or on the device the
    engine computes on, the engine writes straight into it (`write_into`); the backup is taken first.
    """

    def __init__(
        self,
        model: torch.nn.Module | PatchTarget,
        backup: LiveBackup,
        source: SourceModel,
        tensors: dict[str, torch.Tensor],
    ):
        self.model = model
        self.backup = backup
        self.source = source  # model A, whose dtypes the backups keep where exact
        self.tensors = tensors  # model_tensors(model)
        self.targets: dict[str, torch.Tensor] = {}
        self.direct: dict[str, torch.Tensor] = {}
        self.patched: list[str] = []
        self.inference = False  # the targets are inference tensors: the engine writes in inference mode

    def begin(self, plan: list[PlannedTensor]) -> None:
        tensors = self.tensors
        wanted = plan
        missing = [p.key for p in wanted if p.key not in tensors]
        wrong = [
            f"{p.key} {list(p.shape)} vs {list(tensors[p.key].shape)}"
            for p in wanted
            if p.key in tensors and tuple(tensors[p.key].shape) != p.shape
        ]
        if missing or wrong:
            listed = (missing + wrong)[:10]
            raise HostPatchError(
                f"the loaded model cannot take this merge ({len(missing)} keys missing, {len(wrong)} shapes differ): "
                + ", ".join(listed)
            )
        self.targets = {p.key: tensors[p.key] for p in wanted}
        self.inference = any(t.is_inference() for t in self.targets.values())
        # What the workers may compute straight into, made here once: each torch call of a worker
        # lets the others take the GIL, so `write_into` makes none.
        self.direct = {
            key: tensor if tensor.is_inference() else tensor.detach()
            for key, tensor in self.targets.items()
            if isinstance(tensor, torch.Tensor)  # not stored in parts (Forge's split projections)
            and tensor.is_contiguous()  # on the CPU, or on a GPU the engine computes on (engine/run.py _direct)
        }

    def _back_up(self, key: str) -> None:
        self.backup.take(key, self.targets[key], self.source)
        self.backup.patched.add(key)

    def write_into(self, key: str, dtype: torch.dtype) -> torch.Tensor | None:
        """The parameter itself, to compute into (called from the engine's workers)."""
        tensor = self.direct.get(key)
        if tensor is None or tensor.dtype != dtype:
            return None
        self._back_up(key)
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        target = self.targets[key]
        if tensor.data_ptr() != target.data_ptr():  # not computed in place
            self._back_up(key)
            with writing(target):
                target.copy_(tensor.to(target.device, target.dtype))
        self.patched.append(key)

    def abort(self) -> None:
        """All or nothing: a failed or cancelled merge leaves model A, as a restore would.

        A merge that `begin` refused has written nothing: the model stays as it was."""
        if self.targets:
            self.backup.restore(self.model, tensors=self.tensors)


@dataclass
class LiveResult:
    recipe: HashedRecipe
    patched: int
    report: EngineReport
    plan: MergePlan


def merge_into_model(
    recipe: Node | BoundRecipe,
    model: torch.nn.Module | PatchTarget,
    backup: LiveBackup,
    engine: EngineOptions | None = None,
    models_dir: str | None = None,
    skip_prefixes: tuple[str, ...] = (),
) -> LiveResult:
    """Patch the merge of `recipe` into `model` (which holds A), undoing any earlier patch.

    Keys under `skip_prefixes` stay as they are (the host keeps them from elsewhere, e.g. an external VAE),
    and so do keys the host does not load at all (`PatchTarget.unused_keys`).
    A BoundRecipe is used as it is and stays open (its owner closes it); a node is bound here.
    """
    if not isinstance(recipe, BoundRecipe):
        with bind_recipe(recipe, models_dir) as bound:
            return merge_into_model(bound, model, backup, engine, models_dir, skip_prefixes)
    bound = recipe
    primary = bound.primary
    tensors = live_tensors(model)
    unused = getattr(model, "unused_keys", frozenset())
    full = plan_merge(bound, torch.float32, prune=True)
    # Keys the merge leaves as A are already in the loaded model: nothing to read or write.
    jobs = [
        j
        for j in full.jobs
        if j.cast and j.tree is not primary and not j.key.startswith(skip_prefixes) and j.key not in unused
    ]
    # Results in each parameter's own dtype (one rounding, as the file path's), A from memory.
    resident = ResidentModel(primary, backup, tensors, engine.cache if engine else None)
    jobs = [
        dataclasses.replace(
            job,
            out=PlannedTensor(job.key, tensors[job.key].dtype, job.out.shape) if job.key in tensors else job.out,
            tree=_with_leaf(job.tree, primary, resident),
        )
        for job in jobs
    ]
    plan = dataclasses.replace(full, jobs=jobs)
    cache = engine.cache if engine else None
    if cache is not None:  # the backups are model A's copy in RAM: one budget for both
        backup.limit = cache.budget
        cache.reserve(backup.ram_after([j.key for j in jobs if j.key in tensors], tensors, primary))
    backup.restore(model, {j.key for j in jobs}, tensors)  # the earlier patch, where this one does not write
    sink = LiveModelSink(model, backup, primary, tensors)
    try:
        report = run_plan(plan, sink, engine)
    finally:
        if cache is not None:
            cache.reserve(backup.nbytes)
    hashed = hashed_recipe(bound, engine.progress if engine else None)
    return LiveResult(hashed, len(sink.patched), report, plan)


def _with_leaf(tree: Reduced, old: Leaf, new: ResidentModel) -> Reduced:
    if tree is old:
        return new
    if is_leaf(tree):
        return tree
    return Step(tree.method, tuple(_with_leaf(i, old, new) for i in tree.inputs), tree.params)
