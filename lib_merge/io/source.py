"""A source model: an open checkpoint seen through canonical key names, with its architecture."""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable

import torch

from lib_merge.arch.detect import ArchInfo, alias_map, detect
from lib_merge.io import ModelFile, TensorInfo, open_model
from lib_merge.io.hashing import file_sha256
from lib_merge.io.layouts import in_canonical_layout, layout_of

_YAML_V = re.compile(r"parameterization:\s*[\"']?v[\"']?\s*$", re.MULTILINE)


class SourceModel:
    """Header-level view of one input file; tensors are read on demand by canonical key."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.name = os.path.basename(path)
        self.file: ModelFile = open_model(self.path)
        try:
            self.file = in_canonical_layout(self.file)
        except BaseException:
            self.file.close()
            raise
        self.layout = layout_of(self.file)  # arch.layouts: how the file names the keys seen here
        stored = self.file.keys()
        aliases = alias_map(stored)
        renamed = set(aliases.values())
        self._file_key = {k: k for k in stored if k not in renamed}
        self._file_key.update(aliases)
        # Canonical keys in the order their bytes lie in the file.
        order = {k: i for i, k in enumerate(stored)}
        self.keys = sorted(self._file_key, key=lambda k: order[self._file_key[k]])
        self.shapes: dict[str, tuple[int, ...]] = {k: tuple(self.info(k).shape) for k in self.keys}
        self.arch: ArchInfo = detect(self.shapes, self.file.metadata)
        self.arch.aliases = aliases
        if self.arch.prediction_source == "default" and _sidecar_says_v(self.path):
            self.arch.prediction, self.arch.prediction_source = "v", "sidecar yaml"
        self._sha256: str | None = None
        self._hashing = threading.Lock()  # one hash per file even when two threads ask at once

    def __contains__(self, key: str) -> bool:
        return key in self._file_key

    def info(self, key: str) -> TensorInfo:
        return self.file.tensors[self._file_key[key]]

    def read(self, key: str) -> torch.Tensor:
        """A copy the caller owns."""
        return self.file.read(self._file_key[key])

    def direct_bytes(self, key: str) -> int:
        """The buffer `read_direct` needs for `key` (0: it reads into memory of its own)."""
        size = getattr(self.file, "direct_bytes", None)
        return size(self._file_key[key]) if size is not None else 0

    def read_direct(self, key: str, into: torch.Tensor) -> torch.Tensor:
        """The tensor read past the page cache into `into` (a page-aligned buffer of `direct_bytes(key)`) where
        the file can (safetensors on Linux), else a copy the caller owns."""
        direct = getattr(self.file, "read_direct", None)
        return direct(self._file_key[key], into) if direct is not None else self.read(key)

    def view(self, key: str) -> torch.Tensor:
        """A read-only view for a short use; call `release` when done."""
        return self.file.view(self._file_key[key])

    def release(self, key: str) -> None:
        self.file.release(self._file_key[key])

    def range_reader(self, key: str) -> Callable[..., torch.Tensor] | None:
        """A function reading elements [start, end) of `key` from the file without mapping them, where the
        file can (safetensors, fp16/bf16/fp32 stored as one tensor); else None."""
        reader = getattr(self.file, "range_reader", None)  # a pickled checkpoint is in memory already
        return reader(self._file_key[key]) if reader is not None else None

    def read_ahead(self, key: str, nbytes: int) -> None:
        """The `nbytes` of the file after `key` into the page cache, where the file can."""
        ahead = getattr(self.file, "read_ahead", None)
        if ahead is not None:
            ahead(self._file_key[key], nbytes)

    @property
    def metadata(self) -> dict[str, str]:
        return self.file.metadata

    def sha256(self, progress: Callable[[int, int], None] | None = None) -> str:
        with self._hashing:
            if self._sha256 is None:
                self._sha256 = file_sha256(self.path, progress)
        return self._sha256

    def identity(self) -> tuple[int, int]:
        return self.file.size, self.file.mtime_ns

    @functools.cached_property
    def cache_identity(self) -> tuple[str, int, int]:
        """Fixed while the file is open (a change on disk is caught by SourceChangedError)."""
        return os.path.realpath(self.path), self.file.size, self.file.mtime_ns

    def close(self) -> None:
        self.file.close()


def _sidecar_says_v(path: str) -> bool:
    yaml = os.path.splitext(path)[0] + ".yaml"
    try:
        with open(yaml, encoding="utf-8") as f:
            return bool(_YAML_V.search(f.read()))
    except OSError:
        return False


def file_arch(path: str) -> str:
    """The architecture id of a checkpoint (sd1, sdxl, …), from its header alone."""
    source = SourceModel(path)
    try:
        return source.arch.id
    finally:
        source.close()


def file_schema(path: str):
    """The block schema of a checkpoint (None for architectures without blocks), from its header alone."""
    from lib_merge.arch.blocks import schema_for

    source = SourceModel(path)
    try:
        return schema_for(source.arch.id)
    finally:
        source.close()
