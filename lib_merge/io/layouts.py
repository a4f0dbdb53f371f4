"""Files in another key layout than their architecture's canonical one (arch.layouts).

Read through a LayoutView, the engine, the analysis and the LoRA code only ever meet canonical keys,
whatever names the file stores; written through a LayoutSink, a merge takes the layout's names again,
each tensor renamed or split by rows into its parts."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from lib_merge.arch.layouts import SINGLE_FILE, Parts, canonical_parts, detect_layout, split_rows, stored_parts
from lib_merge.errors import CorruptModelError
from lib_merge.io.safetensors_reader import TensorInfo
from lib_merge.io.writer import PlannedTensor


class LayoutView:
    """Canonical keys over a file of another layout; parts are joined by rows on read."""

    def __init__(self, file, layout: str):
        self.file = file
        self.layout = layout
        self.path = file.path
        self.size = file.size
        self.mtime_ns = file.mtime_ns
        self._parts = canonical_parts(layout, file.keys())
        name = os.path.basename(file.path)
        self.tensors = {key: _joined_info(name, key, parts, file.tensors) for key, parts in self._parts.items()}
        # Visit tensors in the order their first bytes lie in the file.
        self.tensors = dict(sorted(self.tensors.items(), key=lambda kv: kv[1].offset))

    @property
    def metadata(self) -> dict[str, str]:
        return self.file.metadata

    def keys(self) -> list[str]:
        return list(self.tensors)

    def read(self, key: str) -> torch.Tensor:
        parts = self._parts[key]
        if len(parts.keys) == 1:
            stored = self.file.read(parts.keys[0])
            return _swap_halves(stored) if parts.swap_halves else stored
        return torch.cat([self.file.read(k) for k in parts.keys])  # parts are row blocks; none is swapped

    def direct_bytes(self, key: str) -> int:
        parts = self._parts[key]
        size = getattr(self.file, "direct_bytes", None)
        return size(parts.keys[0]) if len(parts.keys) == 1 and not parts.swap_halves and size is not None else 0

    def read_direct(self, key: str, into: torch.Tensor) -> torch.Tensor:
        """Past the page cache for a tensor stored as it is seen; a joined or swapped one is read as `read`."""
        if self.direct_bytes(key):
            return self.file.read_direct(self._parts[key].keys[0], into)
        return self.read(key)

    def view(self, key: str) -> torch.Tensor:
        parts = self._parts[key]
        if len(parts.keys) == 1 and not parts.swap_halves:
            return self.file.view(parts.keys[0])
        return self.read(key)  # a joined tensor is a fresh copy; nothing to release

    def release(self, key: str) -> None:
        parts = self._parts[key]
        if len(parts.keys) == 1 and not parts.swap_halves:
            self.file.release(parts.keys[0])

    def range_reader(self, key: str) -> Callable[..., torch.Tensor] | None:
        """Reads of a slice of a tensor stored as it is seen (one part, not swapped); else None."""
        parts = self._parts[key]
        if len(parts.keys) != 1 or parts.swap_halves:
            return None
        return self.file.range_reader(parts.keys[0])

    def close(self) -> None:
        self.file.close()


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    half = t.shape[0] // 2
    return torch.cat([t[half:], t[:half]])


def _joined_info(name: str, key: str, parts: Parts, stored: dict[str, TensorInfo]) -> TensorInfo:
    infos = [stored[k] for k in parts.keys]
    first = infos[0]
    for info in infos[1:]:
        if info.dtype != first.dtype or info.shape[1:] != first.shape[1:]:
            raise CorruptModelError(
                f"{name}: {info.key!r} ({info.dtype}, {list(info.shape)}) does not join {first.key!r} "
                f"({first.dtype}, {list(first.shape)}) into {key!r}"
            )
    if len(infos) == 1:
        return TensorInfo(key, first.dtype, first.shape, first.offset, first.nbytes)
    rows = sum(i.shape[0] for i in infos)
    return TensorInfo(key, first.dtype, (rows,) + first.shape[1:], first.offset, sum(i.nbytes for i in infos))


def in_canonical_layout(file):
    """The file itself when it is in the canonical layout, else a LayoutView of it."""
    layout = detect_layout(file.keys())
    return file if layout == SINGLE_FILE else LayoutView(file, layout)


def layout_of(file) -> str:
    return file.layout if isinstance(file, LayoutView) else SINGLE_FILE


class LayoutSink:
    """Passes every tensor on to `inner` under the layout's names; tensors the layout has no place
    for are left out."""

    def __init__(self, inner, layout: str):
        self.inner = inner
        self.layout = layout
        self._parts: dict[str, Parts] = {}
        self._rows: dict[str, list[int]] = {}

    def begin(self, plan: list[PlannedTensor]) -> None:
        self._parts = stored_parts(self.layout, [p.key for p in plan])
        shapes = {p.key: p.shape for p in plan}
        stored: list[PlannedTensor] = []
        for p in plan:
            parts = self._parts.get(p.key)
            if parts is None:
                continue
            rows = split_rows(parts, p.key, shapes)
            self._rows[p.key] = rows
            stored += [PlannedTensor(k, p.dtype, (n,) + p.shape[1:]) for k, n in zip(parts.keys, rows)]
        self.inner.begin(stored)

    def put(self, key: str, tensor: torch.Tensor) -> None:
        parts = self._parts.get(key)
        if parts is None:
            return
        if parts.swap_halves:
            half = tensor.shape[0] // 2
            tensor = torch.cat([tensor[half:], tensor[:half]])
        start = 0
        for stored_key, rows in zip(parts.keys, self._rows[key]):
            self.inner.put(stored_key, tensor[start : start + rows])
            start += rows

    def abort(self) -> None:
        self.inner.abort()

    @property
    def data_sha256(self) -> str:
        return self.inner.data_sha256

    def finish(self, metadata: dict[str, str], before_publish: Callable[[os.stat_result], None] | None = None) -> str:
        return self.inner.finish(metadata, before_publish)
