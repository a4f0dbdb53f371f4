"""The GPU path on a machine without one: the device check on every surface (one error naming the device,
before any tensor is read), the choice of page-locked staging (CUDA only), and the staged code itself run
on the CPU against the ordinary path, byte for byte (docs/PERFORMANCE.md, "GPU path")."""

from __future__ import annotations

import shutil

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import build_model, load
from test_merge import merge, recipe

from lib_merge.app.ports import HostConfig
from lib_merge.app.workbench import Workbench
from lib_merge.engine import run
from lib_merge.engine.live import LiveBackup, merge_into_model, model_tensors
from lib_merge.engine.options import EngineOptions
from lib_merge.errors import ParameterError
from lib_merge.host.folder import FolderHost
from lib_merge.io import device as device_module
from lib_merge.io.device import Transfer, check_device, uses_pinned
from lib_merge.io.source import SourceModel
from lib_merge.lora.factor import randomized_svd
from lib_merge.recipe import parse_recipe
from lib_merge.surfaces.cli import main
from lib_merge.surfaces.http import add_routes

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
ABSENT = "asked for, but CUDA is not available here"


@needs_no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_asked_for_where_there_is_none_is_one_error_naming_it(name):
    with pytest.raises(ParameterError, match=f"device '{name}' {ABSENT}"):
        check_device(name)
    with pytest.raises(ParameterError, match=f"'{name}'"):
        EngineOptions(device=name)  # options that name a missing device cannot be made


@pytest.mark.parametrize("name", ["quantum", "cuda:x", "", "xpu"])
def test_unknown_devices_are_refused_by_name(name):
    with pytest.raises(ParameterError, match=f"unknown device '{name}'; use cpu, cuda, cuda:N or mps"):
        check_device(name)


def test_the_cpu_is_the_cpu_however_it_is_named():
    assert check_device("cpu") == check_device("cpu:0") == torch.device("cpu")


def test_page_locked_staging_is_for_cuda_devices_only():
    assert uses_pinned(torch.device("cuda")) and uses_pinned(torch.device("cuda", 1))
    assert not uses_pinned(torch.device("cpu")) and not uses_pinned(torch.device("mps"))
    stage = Transfer(torch.device("cpu"))
    assert not stage.pinned and stage.stream is None and all(b.event is None for b in stage.buffers)
    assert all(not b.host.is_pinned() for b in stage.buffers)


def test_the_transfer_carries_tensors_in_pieces_through_its_ring_of_buffers():
    stage = Transfer(torch.device("cpu"), piece_bytes=96, ring=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # the ring wraps many times, within one call and across calls
        source = torch.randn(37, 11, generator=g).half().T  # not contiguous; 814 bytes: 9 pieces
        moved = stage.to_device(source)
        assert moved.dtype == torch.float16 and moved.shape == source.shape and torch.equal(moved, source)
        assert moved.data_ptr() != source.data_ptr()
        result = torch.randn(5, 81, generator=g) * 1000
        out = torch.empty(405, dtype=torch.float16)
        assert stage.to_host(result, out) is out and torch.equal(out, result.reshape(-1).half())
    with pytest.raises(ValueError, match="at least two"):
        Transfer(torch.device("cpu"), ring=1)


def stage_on_cpu(patch) -> dict:
    """The engine's GPU path run on the CPU: every key through a worker's Transfer, in chunks of 1000
    elements and pieces of 1.5 KiB (the miniatures then take many of each). Counts the copies made."""
    calls = {"to_device": 0, "to_host": 0}
    real_to_device, real_to_host = Transfer.to_device, Transfer.to_host

    def to_device(self, tensor):
        calls["to_device"] += 1
        return real_to_device(self, tensor)

    def to_host(self, tensor, out):
        calls["to_host"] += 1
        return real_to_host(self, tensor, out)

    patch.setattr(run, "uses_pinned", lambda device: True)
    patch.setattr(run, "DEVICE_CHUNK_ELEMENTS", 1000)
    patch.setattr(device_module, "PIECE_BYTES", 1536)
    patch.setattr(Transfer, "to_device", to_device)
    patch.setattr(Transfer, "to_host", to_host)
    return calls


CASES = [  # (method, models, params, output dtype): elementwise (fused on the CPU), whole-tensor, drawn, pre-pass
    ("weighted_sum", 2, {"alpha": 0.3}, torch.float16),
    ("weighted_sum", 2, {"alpha": 0.3}, torch.float32),
    ("add_difference", 3, {"alpha": 0.7}, torch.bfloat16),
    ("train_difference", 3, {"alpha": 0.5}, torch.float16),
    ("ties", 3, {}, torch.float16),
    ("dare", 3, {"seed": 4}, torch.float16),
    ("cosine_a", 2, {"alpha": 0.4}, torch.float16),
    ("slerp", 2, {"alpha": 0.6}, torch.float32),
]


@pytest.mark.parametrize("method, count, params, dtype", CASES)
def test_the_staged_path_gives_the_bytes_of_the_plain_one(sd1, tmp_path, monkeypatch, method, count, params, dtype):
    text = recipe(method, sd1[:count], **params)
    plain = load(merge(text, tmp_path / "plain.safetensors", dtype).path)
    calls = stage_on_cpu(monkeypatch)
    through = load(merge(text, tmp_path / "staged.safetensors", dtype).path)
    assert calls["to_device"] > 100 and calls["to_host"] > 100  # the path under test was taken
    assert plain.keys() == through.keys()
    assert all(torch.equal(plain[k], through[k]) for k in plain)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_staged_live_merge_writes_the_bytes_of_the_plain_one_and_restores(sd1, monkeypatch, dtype):
    text = recipe("add_difference", sd1, alpha=0.6)
    plain_model, staged_model = build_model(load(sd1[0]), dtype), build_model(load(sd1[0]), dtype)
    original = {k: t.detach().clone() for k, t in model_tensors(staged_model).items()}
    merge_into_model(parse_recipe(text), plain_model, LiveBackup(), EngineOptions())
    calls = stage_on_cpu(monkeypatch)
    backup = LiveBackup()
    merge_into_model(parse_recipe(text), staged_model, backup, EngineOptions())
    assert calls["to_host"] > 100
    plain, staged = model_tensors(plain_model), model_tensors(staged_model)
    assert all(torch.equal(plain[k], staged[k]) for k in plain)
    assert backup.restore(staged_model) > 0
    assert all(torch.equal(t, original[k]) for k, t in model_tensors(staged_model).items())


def test_the_randomized_svd_is_torch_svd_lowrank_bit_for_bit_on_the_cpu():
    g = torch.Generator().manual_seed(3)
    for shape in ((96, 40), (24, 200)):  # tall, and wide (factorised through its transpose)
        matrix = torch.randn(*shape, generator=g)
        for seed in (0, 11):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                reference = torch.svd_lowrank(matrix, q=12, niter=2)
            state = torch.random.get_rng_state()
            ours = randomized_svd(matrix, 12, 2, seed)
            assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is not touched
            assert all(torch.equal(a, b) for a, b in zip(reference, ours, strict=True))


@pytest.fixture
def no_reads(monkeypatch):
    """A tensor read or a file hash fails the test: the device must be refused before either."""

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read (or a file hashed) before the device was checked")

    for name in ("read", "view", "sha256"):
        monkeypatch.setattr(SourceModel, name, refuse)


@needs_no_cuda
def test_every_command_refuses_cuda_here_in_one_line_before_reading(sd1, tmp_path, capsys, no_reads):
    a, b, out = str(sd1[0]), str(sd1[1]), tmp_path / "out.safetensors"
    commands = [
        ["merge", "--a", a, "--b", b, "--alpha", "0.3", "--device", "cuda", "-o", out],
        ["merge", "--a", a, "--b", b, "--rebasin", "--device", "cuda:0", "-o", out],
        ["rebasin", "--a", a, "--b", b, "--device", "cuda", "-o", out],
        ["rebasin", "--a", a, "--b", b, "--self-check", "--device", "cuda", "-o", out],
        ["lora", "extract", "--a", a, "--b", b, "--device", "cuda", "-o", out],
        ["--models-dir", tmp_path, "ui", "--device", "cuda"],
    ]
    for argv in commands:
        assert main(argv) == ParameterError.exit_code, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and ABSENT in errors[0] and "'cuda" in errors[0], (argv, errors)
        assert not out.exists()


@needs_no_cuda
def test_the_http_api_answers_400_naming_the_device_of_the_standalone_setting(sd1, tmp_path, no_reads):
    for path in sd1:
        shutil.copy(path, tmp_path / path.name)
    workbench = Workbench(FolderHost(str(tmp_path), HostConfig(device="cuda")))
    app = FastAPI()
    add_routes(app, workbench)
    api = TestClient(app)
    a, b = sd1[0].name, sd1[1].name
    for route, body in (
        ("/alloy/v1/merge", {"a": a, "b": b, "alpha": 0.3}),
        ("/alloy/v1/merge", {"a": a, "b": b, "alpha": 0.3, "rebasin": True}),
        ("/alloy/v1/lora/extract", {"a": a, "b": b}),
    ):
        answer = api.post(route, json=body)
        assert answer.status_code == 400 and f"device 'cuda' {ABSENT}" in answer.json()["error"], answer.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in sd1)  # nothing written


@needs_no_cuda
def test_the_webui_setting_cuda_is_refused_and_the_loaded_model_stays_a(webui):
    webui.shared.opts.data["alloy_device"] = "cuda"  # Settings → Alloy → Merge on this device
    app = FastAPI()
    add_routes(app, webui.workbench)
    before = {k: t.detach().clone() for k, t in model_tensors(webui.model).items()}
    answer = TestClient(app).post("/alloy/v1/merge", json={"a": "model_a", "b": "model_b", "alpha": 0.5})
    assert answer.status_code == 400 and f"device 'cuda' {ABSENT}" in answer.json()["error"], answer.text
    assert all(torch.equal(t, before[k]) for k, t in model_tensors(webui.model).items())
    assert TestClient(app).get("/alloy/v1/history").json()["rows"] == []
