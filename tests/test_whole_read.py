"""Many-model keys read whole past the page cache (O_DIRECT) into the engine's arena: the bytes are the stored
ones at any alignment of the file's data, the system without O_DIRECT reads as before, and the arena hands out
page-aligned regions first fit, waits while it is full and stops waiting on a cancel."""

from __future__ import annotations

import json
import os
import struct
import threading
import time

import pytest
import torch
from safetensors.torch import save_file

from lib_merge.engine.arena import Arena
from lib_merge.engine.options import CancelToken
from lib_merge.errors import Cancelled
from lib_merge.io.direct_read import DIRECT_ALIGN, aligned_bytes
from lib_merge.io.safetensors_reader import SafetensorsFile

TENSORS = {
    "h": torch.randn(3, 1001).half(),  # odd byte counts put the next tensors off their 4-byte alignment
    "b": torch.randn(50, 3).bfloat16(),
    "f": torch.randn(999),
    "big": torch.randn(700, 1031),  # several pages, not a multiple of one
    "empty": torch.zeros(0),
}


def _write_with_header_padding(path, tensors: dict[str, torch.Tensor], padding: int) -> None:
    """A safetensors file whose data starts `padding` bytes after its JSON (old writers did not align it to 8)."""
    header, blobs, offset = {}, [], 0
    for key, t in tensors.items():
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        name = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}[t.dtype]
        header[key] = {"dtype": name, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode() + b" " * padding
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.mark.parametrize("padding", [0, 1, 2, 3, 5])
def test_direct_reads_are_the_stored_tensors_at_any_alignment(tmp_path, padding):
    path = tmp_path / f"pad{padding}.safetensors"
    _write_with_header_padding(path, TENSORS, padding)
    f = SafetensorsFile(str(path))
    try:
        assert f.direct_bytes("big") >= TENSORS["big"].numel() * 4  # this file system reads past the cache
        for key, expected in TENSORS.items():
            size = f.direct_bytes(key)
            assert size % DIRECT_ALIGN == 0
            into = aligned_bytes(size + 1)  # dirty: nothing of it may show through
            into.fill_(0xA5)
            got = f.read_direct(key, into)
            assert got.dtype == expected.dtype and torch.equal(got, expected), (key, padding)
            assert got.numel() == 0 or got.data_ptr() % got.element_size() == 0
        with pytest.raises(ValueError, match="page-aligned"):
            f.read_direct("big", aligned_bytes(1 << 22)[1:])
    finally:
        f.close()


def test_without_o_direct_the_reads_go_through_the_cache(tmp_path, monkeypatch):
    """A system without O_DIRECT (or a file system refusing it): no arena size, and read_direct is `read`."""
    path = tmp_path / "plain.safetensors"
    save_file(TENSORS, str(path))
    monkeypatch.delattr(os, "O_DIRECT")
    f = SafetensorsFile(str(path))
    try:
        assert f.direct_bytes("big") == 0
        assert torch.equal(f.read_direct("big", torch.empty(0, dtype=torch.uint8)), TENSORS["big"])
    finally:
        f.close()


def test_the_direct_descriptor_is_the_open_file_not_its_path(tmp_path):
    """The file replaced under its name after the merge opened it: the reads still come from the file opened."""
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(4096)}, str(path))
    f = SafetensorsFile(str(path))
    try:
        os.replace(_other(tmp_path), path)
        got = f.read_direct("w", aligned_bytes(f.direct_bytes("w")))
        assert torch.equal(got, torch.ones(4096))
    finally:
        f.close()


def _other(folder):
    other = folder / "other.safetensors"
    save_file({"w": torch.full((4096,), 7.0)}, str(other))
    return other


def test_the_arena_hands_out_aligned_regions_first_fit_and_waits_while_full():
    arena = Arena(10 * DIRECT_ALIGN)
    never = CancelToken().check
    a = arena._take(3 * DIRECT_ALIGN, never)
    b = arena._take(1, never)  # rounded up to a page
    c = arena._take(4 * DIRECT_ALIGN, never)
    base = a.data_ptr()
    assert (b.data_ptr() - base, c.data_ptr() - base) == (3 * DIRECT_ALIGN, 4 * DIRECT_ALIGN)
    assert all(r.data_ptr() % DIRECT_ALIGN == 0 for r in (a, b, c))
    arena.give_back(a)
    assert arena._take(2 * DIRECT_ALIGN, never).data_ptr() == base  # the first gap that fits
    got = []
    waiting = threading.Thread(target=lambda: got.append(arena._take(5 * DIRECT_ALIGN, never)))
    waiting.start()
    time.sleep(0.2)
    assert not got and waiting.is_alive()  # 2 pages free at the end, 1 in a gap: no room for 5
    arena.give_back(c)
    waiting.join(5)
    assert got and got[0].data_ptr() - base == 4 * DIRECT_ALIGN  # after b, which stays
    assert arena.holds(got[0][10:]) and not arena.holds(torch.empty(10))
    with pytest.raises(ValueError, match="does not fit"):
        arena._take(11 * DIRECT_ALIGN, never)


def test_a_cancel_ends_the_wait_for_room():
    arena = Arena(2 * DIRECT_ALIGN)
    cancel = CancelToken()
    arena._take(2 * DIRECT_ALIGN, cancel.check)
    outcome = []

    def take() -> None:
        try:
            arena._take(DIRECT_ALIGN, cancel.check)
            outcome.append("took")
        except Cancelled:
            outcome.append("cancelled")

    waiting = threading.Thread(target=take)
    waiting.start()
    cancel.cancel()
    waiting.join(5)
    assert outcome == ["cancelled"]


@pytest.mark.parametrize("note", ["", "x", "xyz", "a longer note of some length"])
def test_written_files_start_their_data_on_eight_bytes(tmp_path, note):
    """As the safetensors library writes them: a file of one dtype (or of wider dtypes first) has every tensor on
    its elements' alignment, read past the page cache without a move."""
    from lib_merge.io.writer import save_state_dict

    path = str(tmp_path / "out.safetensors")
    save_state_dict(
        path, {"b": torch.randn(7), "a": torch.randn(3, 5).half(), "c": torch.randn(2).half()}, {"note": note}
    )
    f = SafetensorsFile(path)
    try:
        assert f.data_start % 8 == 0 and f.metadata["note"] == note
        assert all(info.offset % info.dtype.itemsize == 0 for info in f.tensors.values())
    finally:
        f.close()


def test_a_run_of_small_tensors_is_one_request(tmp_path, monkeypatch):
    """Small tensors between large ones: the first of a run reads the run, the rest come from memory; a large
    tensor is a request of its own and ends the run."""
    tensors = {f"s{i}": torch.randn(100 + i) for i in range(6)} | {"big": torch.randn(300_000)}
    tensors |= {f"t{i}": torch.randn(50) for i in range(3)}
    path = tmp_path / "runs.safetensors"
    _write_with_header_padding(path, tensors, 0)  # in this order: small, large, small
    f = SafetensorsFile(str(path))
    requests = []
    plain = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, at, *a: requests.append(at) or plain(fd, bufs, at, *a))
    try:
        order = sorted(tensors, key=lambda k: f.tensors[k].offset)
        for key in order:
            got = f.read_direct(key, aligned_bytes(f.direct_bytes(key)))
            assert torch.equal(got, tensors[key]), key
        big_at = order.index("big")
        runs = [order[:big_at], order[big_at + 1 :]]
        assert all(len(run) > 1 for run in runs) and len(requests) == 3, (order, requests)
    finally:
        f.close()


def test_a_file_cut_short_after_it_was_opened_is_one_clear_error(tmp_path):
    """Truncated while a merge runs (another program rewriting it): the error names the file and the key."""
    from lib_merge.errors import CorruptModelError

    path = tmp_path / "cut.safetensors"
    save_file({"a": torch.randn(10), "big": torch.randn(300_000)}, str(path))
    f = SafetensorsFile(str(path))
    try:
        os.truncate(path, f.tensors["big"].offset + 1000)
        with pytest.raises(CorruptModelError, match=r"cut\.safetensors.*'big'"):
            f.read_direct("big", aligned_bytes(f.direct_bytes("big")))
    finally:
        f.close()
