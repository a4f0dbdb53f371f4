"""The lazy reader, the weights-only pickle reader and the atomic streaming writer."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from helpers import load, metadata

from lib_merge.errors import CorruptModelError, UnsafePickleError
from lib_merge.io import CkptFile, SafetensorsFile, SafetensorsWriter, open_model, save_state_dict
from lib_merge.io.writer import PlannedTensor


def _raw_file(path, header: dict, data: bytes, length: int | None = None) -> None:
    body = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body) if length is None else length))
        f.write(body)
        f.write(data)


def test_reader_matches_safetensors_library(sd1):
    ref = load(sd1[0])
    f = SafetensorsFile(str(sd1[0]))
    assert set(f.keys()) == set(ref)
    for key in ref:
        t = f.read(key)
        assert t.dtype == ref[key].dtype and torch.equal(t, ref[key]), key
    offsets = [f.tensors[k].offset for k in f.keys()]
    assert offsets == sorted(offsets), "keys come in file order"


@pytest.mark.parametrize(
    "header, data, length, message",
    [
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None, "is truncated: header needs"),
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, 10**6, "exceeds the file size"),
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, 2**40, "exceeds 100 MB"),
        ({"x": {"dtype": "F4", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, None, "unknown dtype 'F4' at key"),
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16, None, "needs 16"),
        (
            {
                "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "y": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
            },
            b"\0" * 16,
            None,
            "overlap",
        ),
        ([1, 2], b"", None, "not a JSON object"),
    ],
)
def test_corrupt_headers_are_refused_with_the_reason(tmp_path, header, data, length, message):
    path = tmp_path / "bad.safetensors"
    _raw_file(path, header, data, length)
    with pytest.raises(CorruptModelError, match=message) as e:
        open_model(str(path))
    assert "bad.safetensors" in str(e.value)


def test_header_that_is_not_json(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"\xff\xfe{{{" + b"\0" * 10)
    with pytest.raises(CorruptModelError, match="not UTF-8 JSON"):
        open_model(str(path))


def test_truncated_real_checkpoint(sd1, tmp_path):
    cut = tmp_path / "cut.safetensors"
    data = sd1[1].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match=rf"cut.safetensors is truncated: header needs {len(data):,} bytes"):
        open_model(str(cut))


def test_ckpt_plain_and_nested_state_dict(tmp_path):
    sd = {"a.weight": torch.randn(3, 2), "b": torch.arange(4)}
    torch.save(sd, tmp_path / "plain.ckpt")
    torch.save({"state_dict": sd, "global_step": 7}, tmp_path / "nested.ckpt")
    for name in ("plain.ckpt", "nested.ckpt"):
        f = open_model(str(tmp_path / name))
        assert isinstance(f, CkptFile)
        assert set(f.keys()) == set(sd)
        assert torch.equal(f.read("a.weight"), sd["a.weight"])


class NotATensor:
    pass


class RunsCode:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", [2, 4])
def test_ckpt_with_python_objects_is_refused_in_alloys_words(tmp_path, protocol):
    import warnings

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.ones(2)}, "callback": NotATensor(), "hook": RunsCode(marker)}
    torch.save(payload, path, pickle_protocol=protocol)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(UnsafePickleError) as refused:
        warnings.simplefilter("always")
        open_model(str(path))
    message = str(refused.value)
    assert message.startswith("evil.ckpt holds Python objects besides tensors") and "convert it" in message
    assert "weights_only" not in message and "torch" not in message.lower()
    assert caught == [] and not marker.exists()


def test_writer_output_reads_back_with_metadata(tmp_path):
    tensors = {
        "f16": torch.randn(5, 3).half(),
        "bf16": torch.randn(7).bfloat16(),
        "i64": torch.arange(77).reshape(1, 77),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, dtype=torch.int64),
    }
    path = tmp_path / "out.safetensors"
    save_state_dict(str(path), tensors, {"hello": "wörld"})
    back = load(path)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t), k
    assert metadata(path) == {"hello": "wörld"}
    assert os.listdir(tmp_path) == ["out.safetensors"]


def test_writer_abort_leaves_nothing_and_keeps_existing_target(tmp_path):
    target = tmp_path / "keep.safetensors"
    target.write_bytes(b"precious")
    writer = SafetensorsWriter(str(target), [PlannedTensor("x", torch.float32, (2,))], {}).open()
    with pytest.raises(CorruptModelError, match="writer expected 'x'"):
        writer.write("y", torch.zeros(2))
    writer.abort()
    assert os.listdir(tmp_path) == ["keep.safetensors"]
    assert target.read_bytes() == b"precious"


def test_writer_refuses_a_file_without_all_planned_tensors(tmp_path):
    target = tmp_path / "part.safetensors"
    writer = SafetensorsWriter(str(target), [PlannedTensor("x", torch.float32, (2,))] * 2, {}).open()
    writer.write("x", torch.zeros(2))
    with pytest.raises(CorruptModelError, match="1 of 2"):
        writer.finish({})
    assert os.listdir(tmp_path) == []


def test_view_equals_read_and_survives_release(sd1):
    f = SafetensorsFile(str(sd1[0]))
    for key in list(f.keys())[:50]:
        v = f.view(key)
        assert torch.equal(v, f.read(key)), key
        f.release(key)
        assert torch.equal(v, f.read(key)), key  # released pages come back from the file
    f.close()


def test_ctrl_c_while_the_writer_starts_leaves_no_temp_file(tmp_path, monkeypatch):
    """The temporary file appears with open(); an interrupt from then on must remove it."""
    import builtins

    from lib_merge.io import tempfiles

    real_open = builtins.open

    def open_then_interrupt(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        if ".alloy-tmp-" in str(path):
            handle.close()
            raise KeyboardInterrupt
        return handle

    monkeypatch.setattr(tempfiles, "open", open_then_interrupt, raising=False)
    with pytest.raises(KeyboardInterrupt):
        SafetensorsWriter(str(tmp_path / "o.safetensors"), [PlannedTensor("x", torch.float32, (2,))], {}).open()
    assert os.listdir(tmp_path) == []


def test_two_threads_asking_for_a_models_hash_read_the_file_once(sd1, monkeypatch):
    """Re-basin's matching and the merge's background hasher both need the inputs' sha256 at once."""
    import threading
    import time

    import lib_merge.io.source as source_module
    from lib_merge.io.source import SourceModel

    calls = []

    def slow_hash(path, progress=None):
        calls.append(path)
        time.sleep(0.2)
        return "ab" * 32

    monkeypatch.setattr(source_module, "file_sha256", slow_hash)
    model = SourceModel(str(sd1[0]))
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(model.sha256())) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        model.close()
    assert results == ["ab" * 32] * 2 and len(calls) == 1


def test_early_writeback_hands_over_all_but_the_newest_bytes(tmp_path, monkeypatch):
    """The pacing of large writes: every range older than the lag is advised once, in order, and the
    file's bytes are what was written."""
    import os

    from lib_merge.io.writeback import Writeback

    calls = []
    real = os.posix_fadvise

    def advise(fd, offset, length, advice):
        calls.append((offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", advise)
    path = tmp_path / "big.bin"
    chunk = bytes(range(256)) * 16  # 4 KiB
    with open(path, "wb") as f:
        f.write(b"H" * 100)
        pacing = Writeback(f.fileno(), 100, lag=10_000)
        for _ in range(40):
            f.write(chunk)
            pacing.wrote(len(chunk))
        pacing.close()
    assert calls and calls[0][0] == 100
    assert all(a[0] + a[1] == b[0] for a, b in zip(calls, calls[1:]))  # contiguous, no overlap
    assert 100 + 40 * len(chunk) - (calls[-1][0] + calls[-1][1]) >= 10_000  # the newest lag untouched
    assert path.read_bytes() == b"H" * 100 + chunk * 40


def test_a_slow_writeback_call_does_not_hold_up_the_writer(tmp_path, monkeypatch):
    """The advice runs on a thread of its own: while one call blocks, writes go on and the next call
    covers all that was written meanwhile; close waits for the call in flight; a failing call ends
    the pacing (plain writes)."""
    import os
    import threading

    from lib_merge.io.writeback import Writeback

    calls, release, inside = [], threading.Event(), threading.Event()

    def advise(fd, offset, length, advice):
        calls.append((offset, length))
        inside.set()
        if len(calls) == 1:
            assert release.wait(10)
        if len(calls) == 3:
            raise OSError(22, "not supported here")

    monkeypatch.setattr(os, "posix_fadvise", advise)
    with open(tmp_path / "big.bin", "wb") as f:
        pacing = Writeback(f.fileno(), 0, lag=1000)
        pacing.wrote(2000)
        assert inside.wait(10)  # the first call is running, and blocked
        for _ in range(5):
            pacing.wrote(1000)  # returns at once: the call in flight is not waited for
        assert len(calls) == 1
        release.set()
        pacing.close()
        pacing.wrote(0)  # the next call covers everything written while the first one ran
        pacing.close()
        assert calls == [(0, 1000), (1000, 5000)]
        pacing.wrote(3000)  # the third call fails: no more advice after it
        pacing.close()
        pacing.wrote(5000)
        pacing.wrote(5000)
        pacing.close()
    assert len(calls) == 3 and not pacing.enabled


def _mapping_starts() -> set[int]:
    with open("/proc/self/maps") as f:
        return {int(line.split("-", 1)[0], 16) for line in f}


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc/self/maps")
def test_a_large_read_has_a_mapping_of_its_own_that_goes_with_the_tensor(tmp_path):
    """Memory the RAM cache drops must go back to the system, not stay with the allocator."""
    from safetensors.torch import save_file

    big = torch.arange(1 << 19, dtype=torch.float32)  # 2 MiB
    small = torch.arange(1024, dtype=torch.float32)
    save_file({"big": big, "small": small}, str(tmp_path / "m.safetensors"))
    f = SafetensorsFile(str(tmp_path / "m.safetensors"))
    try:
        read = f.read("big")
        assert torch.equal(read, big) and torch.equal(f.read("small"), small)
        start = read.data_ptr()
        assert start in _mapping_starts()  # the tensor is the whole of one mapping
        del read
        assert start not in _mapping_starts()  # and the mapping is gone with it
    finally:
        f.close()
