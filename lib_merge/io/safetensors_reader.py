"""A lazy safetensors reader: validates the whole header at open, reads tensors on demand.

Two ways to get a tensor: ``read`` copies it with ``os.pread`` into memory the tensor owns
(for tensors that are kept or passed on); ``view`` maps it without a copy for a short use,
and ``release`` then drops the mapped pages from the process (mapped pages count towards
its resident size, so without that a merge of two 7 GB files would look like it holds them).
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lib_merge.errors import CorruptModelError
from lib_merge.io.direct_read import DIRECT_ALIGN, DirectReader, aligned_down, aligned_up
from lib_merge.io.dtypes import SAFETENSORS_DTYPES, itemsize

MAX_HEADER_BYTES = 100 * 1024 * 1024
RANGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # read a slice at a time by range_reader
PREFETCH_BYTES = 1 << 20  # tensors from this size on are read ahead as a whole when mapped


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in its file and what it is."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int


class SafetensorsFile:
    """An open safetensors file; ``read(key)`` returns a fresh CPU tensor."""

    def __init__(self, path: str):
        self.path = path
        self._map: mmap.mmap | None = None
        self._direct: DirectReader | None = None
        self._fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(self._fd)
            self.size = st.st_size
            self.mtime_ns = st.st_mtime_ns
            self.tensors, self.metadata, self.data_start = _parse_header(self._fd, path, self.size)
            self._direct = DirectReader(self._fd, [(t.offset, t.offset + t.nbytes) for t in self.tensors.values()])
        except BaseException:
            self.close()
            raise

    def keys(self) -> list[str]:
        return list(self.tensors)

    def read(self, key: str) -> torch.Tensor:
        """A fresh copy of the tensor at `key`."""
        info = self.tensors[key]
        buf = fresh_bytes(info.nbytes)
        self._pread(buf, info.offset, key)
        return buf.view(info.dtype).reshape(info.shape)

    def direct_bytes(self, key: str) -> int:
        """The size of the page-aligned buffer `read_direct` reads `key` into; 0 where it reads through the cache."""
        info = self.tensors[key]
        if self._direct is None or not self._direct.available():
            return 0
        return aligned_up(info.offset + info.nbytes) - aligned_down(info.offset)

    def read_direct(self, key: str, into: torch.Tensor) -> torch.Tensor:
        """The tensor at `key` read past the page cache (io/direct_read.py) into `into`, a page-aligned byte buffer
        of at least `direct_bytes(key)`, and returned as a view of it; where the system has no O_DIRECT, a fresh
        copy as `read`. The buffer is the caller's to reuse: fresh pages cost a fault each."""
        info = self.tensors[key]
        size = self.direct_bytes(key) if info.nbytes else 0
        if not size:
            return self.read(key)
        if into.numel() < size or into.data_ptr() % DIRECT_ALIGN:
            raise ValueError(f"read_direct needs a page-aligned buffer of {size} bytes")
        try:
            complete = self._direct.read(info.offset, info.nbytes, into[:size])
        except OSError:  # refused after all (EINVAL on some file systems): read through the cache from now on
            return self.read(key)
        if not complete:
            raise CorruptModelError(f"{self.path}: unexpected end of file while reading {key!r}")
        at = info.offset - aligned_down(info.offset)
        misaligned = at % itemsize(info.dtype)
        if misaligned:  # a file whose data does not start on 8 bytes: moved back onto the elements' alignment
            ctypes.memmove(into.data_ptr() + at - misaligned, into.data_ptr() + at, info.nbytes)
            at -= misaligned
        return into[at : at + info.nbytes].view(info.dtype).reshape(info.shape)

    def range_reader(self, key: str) -> Callable[..., torch.Tensor] | None:
        """`read_range` for this key where its dtype is one merges compute from directly (fp16, bf16, fp32)."""
        return functools.partial(self.read_range, key) if self.tensors[key].dtype in RANGE_DTYPES else None

    def read_range(self, key: str, start: int, end: int, into: torch.Tensor | None = None) -> torch.Tensor:
        """Elements [start, end) of the flat tensor at `key`, read into `into` (a byte tensor of their size)
        or memory of their own: nothing is mapped, so a method reading many files a slice at a time holds
        no more of them than that slice."""
        info = self.tensors[key]
        size = itemsize(info.dtype)
        buf = into if into is not None else torch.empty((end - start) * size, dtype=torch.uint8)
        self._pread(buf, info.offset + start * size, key)
        return buf.view(info.dtype)

    def read_ahead(self, key: str, nbytes: int) -> None:
        """Ask the kernel to read the `nbytes` after `key` into the page cache (asynchronously): the keys
        a merge reads next, while it computes this one."""
        info = self.tensors[key]
        start = info.offset + info.nbytes
        if nbytes > 0 and start < self.size:
            os.posix_fadvise(self._fd, start, min(nbytes, self.size - start), os.POSIX_FADV_WILLNEED)

    def _pread(self, buf: torch.Tensor, offset: int, key: str) -> None:
        view = memoryview(buf.numpy())
        got = 0
        while got < len(view):
            n = os.preadv(self._fd, [view[got:]], offset + got)
            if n <= 0:
                raise CorruptModelError(f"{self.path}: unexpected end of file while reading {key!r}")
            got += n

    def view(self, key: str) -> torch.Tensor:
        """The tensor at `key` without a copy; never write to it, and `release` it after use."""
        info = self.tensors[key]
        if info.nbytes == 0:
            return self.read(key)
        if self._map is None:
            # Private mapping: writable for torch, but nothing is ever written back.
            self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_COPY)
        if info.nbytes >= PREFETCH_BYTES:
            # Ask for the whole range at once: faulted in page by page, a tensor the page cache does not hold
            # is read in small pieces, a third slower than reading the file through (Flux files of 12 GB).
            page = mmap.PAGESIZE
            start = info.offset // page * page
            self._map.madvise(mmap.MADV_WILLNEED, start, info.offset + info.nbytes - start)
        count = info.nbytes // info.dtype.itemsize
        return torch.frombuffer(self._map, dtype=info.dtype, count=count, offset=info.offset).reshape(info.shape)

    def release(self, key: str) -> None:
        """Drop the pages of `key` from this process (the page cache keeps them)."""
        info = self.tensors[key]
        if self._map is None or info.nbytes == 0:
            return
        page = mmap.PAGESIZE
        start = info.offset // page * page
        end = min(len(self._map), -(-(info.offset + info.nbytes) // page) * page)
        self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive; the map goes with it
                pass
            self._map = None
        if getattr(self, "_direct", None) is not None:
            self._direct.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        if getattr(self, "_fd", -1) >= 0 or getattr(self, "_map", None) is not None:
            self.close()


def _parse_header(fd: int, path: str, size: int) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    name = os.path.basename(path)
    if size < 8:
        raise CorruptModelError(f"{name} is not a safetensors file: only {size} bytes")
    (header_len,) = struct.unpack("<Q", os.pread(fd, 8, 0))
    if header_len > MAX_HEADER_BYTES:
        raise CorruptModelError(f"{name} has a corrupt header: length prefix {header_len:,} exceeds 100 MB")
    if 8 + header_len > size:
        raise CorruptModelError(
            f"{name} has a corrupt header: length prefix {header_len:,} exceeds the file size {size:,}"
        )
    raw = os.pread(fd, header_len, 8)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptModelError(f"{name} has a corrupt header: not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise CorruptModelError(f"{name} has a corrupt header: not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CorruptModelError(f"{name} has a corrupt header: __metadata__ is not an object")
    data_start = 8 + header_len
    data_size = size - data_start
    tensors: dict[str, TensorInfo] = {}
    max_end = 0
    for key, entry in header.items():
        info = _parse_entry(name, key, entry, data_start)
        tensors[key] = info
        max_end = max(max_end, info.offset - data_start + info.nbytes)
    if max_end > data_size:
        raise CorruptModelError(f"{name} is truncated: header needs {data_start + max_end:,} bytes, file has {size:,}")
    _check_overlaps(name, tensors)
    # Visit tensors in the order their bytes lie in the file: sequential reads.
    ordered = dict(sorted(tensors.items(), key=lambda kv: kv[1].offset))
    return ordered, {str(k): str(v) for k, v in metadata.items()}, data_start


def _parse_entry(name: str, key: str, entry: object, data_start: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise CorruptModelError(f"{name} has a corrupt header entry at key {key!r}")
    dtype_name = entry.get("dtype")
    if dtype_name not in SAFETENSORS_DTYPES:
        raise CorruptModelError(f"{name}: unknown dtype {dtype_name!r} at key {key!r}")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise CorruptModelError(f"{name}: bad shape {shape!r} at key {key!r}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and o >= 0 for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise CorruptModelError(f"{name}: bad data_offsets {offsets!r} at key {key!r}")
    dtype = SAFETENSORS_DTYPES[dtype_name]
    nbytes = math.prod(shape) * itemsize(dtype)
    if offsets[1] - offsets[0] != nbytes:
        raise CorruptModelError(
            f"{name}: key {key!r} has {offsets[1] - offsets[0]:,} bytes but shape {shape} of {dtype_name} "
            f"needs {nbytes:,}"
        )
    return TensorInfo(key, dtype, tuple(shape), data_start + offsets[0], nbytes)


def _check_overlaps(name: str, tensors: dict[str, TensorInfo]) -> None:
    spans = sorted((t.offset, t.offset + t.nbytes, t.key) for t in tensors.values() if t.nbytes)
    for (_, end, key), (start, _, next_key) in zip(spans, spans[1:]):
        if start < end:
            raise CorruptModelError(f"{name}: tensors {key!r} and {next_key!r} overlap in the file")


OWN_MAPPING_BYTES = 1 << 20


def fresh_bytes(nbytes: int) -> torch.Tensor:
    """A new byte buffer; from 1 MiB up, in a mapping of its own, which goes back to the system the
    moment the tensor dies. From the allocator, freed tensor memory may stay with the process: the RAM
    cache, evicting and reading again, then holds more than its budget."""
    if nbytes < OWN_MAPPING_BYTES:
        return torch.empty(nbytes, dtype=torch.uint8)
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.uint8)
