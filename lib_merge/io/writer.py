"""A streaming safetensors writer that never leaves a partial file behind.

The header (offsets from the planned shapes and dtypes) is written first, tensors follow
in planned order straight from tensor memory, and the file only appears under its real
name after flush, fsync and rename. Metadata that is known only at the end (the data
hash) fits in space reserved up front, so nothing is rewritten but the header bytes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from lib_merge.errors import CorruptModelError, DiskFullError
from lib_merge.io.dtypes import DTYPE_NAMES, itemsize
from lib_merge.io.tempfiles import TempFile, seal
from lib_merge.io.writeback import Writeback

HEADER_SLACK = 256
DATA_ALIGN = 8
HASH_QUEUE = 8  # tensors waiting to be hashed while later ones are written


@dataclass(frozen=True)
class PlannedTensor:
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.dtype)


class SafetensorsWriter:
    """``open`` creates the temporary file, ``write`` takes the ``plan`` tensors in order, ``finish``
    publishes and ``abort`` cleans up.

    Making the writer creates no file, so its owner holds it before the file exists and an
    interrupt at any moment leaves nothing that ``abort`` does not remove. Without ``overwrite``,
    ``finish`` never replaces a file that took the target's name meanwhile.
    """

    def __init__(
        self, target: str, plan: list[PlannedTensor], metadata_estimate: dict[str, str], overwrite: bool = False
    ):
        self.target = os.path.abspath(target)
        self.overwrite = overwrite
        self.plan = plan
        self._index = 0
        self._header_entries = _header_entries(plan)
        reserved = len(_header_bytes(self._header_entries, metadata_estimate)) + HEADER_SLACK
        # The data starts on a multiple of 8 bytes, as the safetensors library writes it: every tensor then lies
        # on its elements' alignment, and a reader can view it without a copy (io/safetensors_reader.py).
        self._reserved = -(-(8 + reserved) // DATA_ALIGN) * DATA_ALIGN - 8
        self.data_bytes = sum(p.nbytes for p in plan)
        check_free_space(os.path.dirname(self.target), 8 + self._reserved + self.data_bytes)
        self._temp = TempFile(self.target)
        self._writeback: Writeback | None = None  # made with the file
        self._hash = hashlib.sha256()
        # The data hash runs beside the writes (both release the GIL), in write order.
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="alloy-data-hash")
        self._hashing: deque[Future] = deque()

    def open(self) -> SafetensorsWriter:
        try:  # from the moment the temporary file exists, any exit (Ctrl+C included) removes it
            file = self._temp.create()
            file.write(struct.pack("<Q", self._reserved))
            file.write(b" " * self._reserved)
            self._writeback = Writeback(file.fileno(), 8 + self._reserved)
        except BaseException:
            self.abort()
            raise
        return self

    def write(self, key: str, tensor: torch.Tensor) -> None:
        planned = self.plan[self._index]
        if key != planned.key or tensor.dtype != planned.dtype or tuple(tensor.shape) != planned.shape:
            raise CorruptModelError(
                f"writer expected {planned.key!r} {planned.dtype} {list(planned.shape)}, "
                f"got {key!r} {tensor.dtype} {list(tensor.shape)}"
            )
        self._index += 1
        if planned.nbytes == 0:
            return
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        view = memoryview(data)
        if len(self._hashing) >= HASH_QUEUE:
            self._hashing.popleft().result()
        self._hashing.append(self._hasher.submit(self._hash.update, view))
        try:
            self._temp.file.write(view)
            self._writeback.wrote(len(view))
        except OSError as e:
            self.abort()
            if e.errno == errno.ENOSPC:
                raise DiskFullError(f"disk full while writing {self.target}") from None
            raise

    @property
    def data_sha256(self) -> str:
        while self._hashing:
            self._hashing.popleft().result()
        return self._hash.hexdigest()

    def finish(self, metadata: dict[str, str], before_publish: Callable[[os.stat_result], None] | None = None) -> str:
        """Write the final header, make the file durable and move it to its name.

        `before_publish` sees the finished file's stat just before it takes its name."""
        try:
            if self._index != len(self.plan):
                raise CorruptModelError(f"writer got {self._index} of {len(self.plan)} planned tensors")
            header = _header_bytes(self._header_entries, metadata)
            if len(header) > self._reserved:
                raise CorruptModelError("metadata grew beyond the space reserved for the header")
            self._temp.file.seek(8)
            self._temp.file.write(header + b" " * (self._reserved - len(header)))
            self._writeback.close()
            seal(self._temp.file, self._temp.path, self.target, self.overwrite, before_publish)
            self._hasher.shutdown()
        except BaseException:
            self.abort()
            raise
        return self.target

    def abort(self) -> None:
        self._hasher.shutdown(wait=True, cancel_futures=True)
        if self._writeback is not None:
            self._writeback.close()
        self._temp.discard()


def _header_entries(plan: list[PlannedTensor]) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    offset = 0
    for p in plan:
        entries[p.key] = {
            "dtype": DTYPE_NAMES[p.dtype],
            "shape": list(p.shape),
            "data_offsets": [offset, offset + p.nbytes],
        }
        offset += p.nbytes
    return entries


def _header_bytes(entries: dict[str, dict], metadata: dict[str, str]) -> bytes:
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}} if metadata else {}
    header.update(entries)
    return json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_free_space(folder: str, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskFullError(f"not enough space in {folder}: need {needed:,} bytes, {free:,} free")


def save_state_dict(
    path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, overwrite: bool = True
) -> str:
    """Write a whole in-memory state dict (fixtures, small tools) through the streaming writer."""
    plan = [PlannedTensor(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    writer = SafetensorsWriter(path, plan, metadata or {}, overwrite)
    try:
        writer.open()
        for k, t in tensors.items():
            writer.write(k, t)
        return writer.finish(metadata or {})
    except BaseException:
        writer.abort()
        raise


class FileSink:
    """A merge's sink (begin, put, abort, finish) that streams into a SafetensorsWriter."""

    def __init__(self, target: str, metadata_estimate: dict[str, str], overwrite: bool = False):
        self.target = target
        self.metadata_estimate = metadata_estimate
        self.overwrite = overwrite
        self.writer: SafetensorsWriter | None = None

    def begin(self, plan: list[PlannedTensor]) -> None:
        self.writer = SafetensorsWriter(self.target, plan, self.metadata_estimate, self.overwrite)
        self.writer.open()

    def put(self, key: str, tensor: torch.Tensor) -> None:
        self.writer.write(key, tensor)

    def abort(self) -> None:
        if self.writer:
            self.writer.abort()

    @property
    def data_sha256(self) -> str:
        return self.writer.data_sha256

    def finish(self, metadata: dict[str, str], before_publish: Callable[[os.stat_result], None] | None = None) -> str:
        return self.writer.finish(metadata, before_publish)
