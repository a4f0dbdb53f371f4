"""Quantized formats Alloy does not read (GGUF, bitsandbytes NF4/FP4) are refused by name, in one line, before
any tensor is read: on the command line (a real process: exit code, no traceback) and over HTTP (a 400);
and an fp8 save over HTTP is range-checked, or clamped with save.clamp."""

from __future__ import annotations

import os
import shutil
import struct

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import load
from safetensors.torch import save_file
from test_cli import cli

BIG_KEY = "model.diffusion_model.input_blocks.1.1.proj_in.weight"


def write_gguf(path) -> None:
    """The start of a GGUF file: magic, version 3, no tensors, no metadata."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))


def write_nf4(path, fp4: bool = False) -> None:
    """A bitsandbytes 4-bit layer as Forge's NF4 Flux files store it: packed U8 weight, absmax, quant_map and
    the packed quant_state."""
    kind = "fp4" if fp4 else "nf4"
    weight = "model.diffusion_model.double_blocks.0.img_attn.proj.weight"
    save_file(
        {
            weight: torch.zeros(32, 1, dtype=torch.uint8),
            f"{weight}.absmax": torch.ones(1),
            f"{weight}.quant_map": torch.linspace(-1, 1, 16),
            f"{weight}.quant_state.bitsandbytes__{kind}": torch.zeros(64, dtype=torch.uint8),
        },
        str(path),
    )


@pytest.fixture
def quantized(tmp_path):
    write_gguf(tmp_path / "flux.gguf")
    write_gguf(tmp_path / "renamed.safetensors")  # a GGUF file by its bytes, whatever its ending
    write_nf4(tmp_path / "flux-nf4.safetensors")
    write_nf4(tmp_path / "flux-fp4.safetensors", fp4=True)
    return tmp_path


EXPECTED = {
    "flux.gguf": "flux.gguf is a GGUF file (quantized)",
    "renamed.safetensors": "renamed.safetensors is a GGUF file (quantized)",
    "flux-nf4.safetensors": "flux-nf4.safetensors is a bitsandbytes NF4 file (quantized)",
    "flux-fp4.safetensors": "flux-fp4.safetensors is a bitsandbytes FP4 file (quantized)",
}


def test_gguf_and_nf4_are_refused_by_name_on_the_command_line(quantized, sd1):
    out = quantized / "out.safetensors"
    for name, words in EXPECTED.items():
        proc = cli("merge", "--a", sd1[0], "--b", quantized / name, "--mode", "ws", "-o", out, "--no-history")
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 4, proc.stderr
        assert errors == [f"error: {words}; Alloy reads safetensors and .ckpt in fp32/fp16/bf16/fp8 only"]
        assert "Traceback" not in proc.stderr + proc.stdout
        if name == "flux.gguf":  # the same as model A, and for inspect
            inspected = cli("inspect", quantized / name)
            assert inspected.returncode == 4 and words in inspected.stderr and "Traceback" not in inspected.stderr
    assert not out.exists() and not [n for n in os.listdir(quantized) if ".alloy-tmp-" in n]


@pytest.fixture
def standalone(tmp_path, sd1, sd1_fp32, quantized):
    from lib_merge.surfaces.standalone import create_app

    folder = tmp_path / "models"
    folder.mkdir()
    for name in EXPECTED:
        shutil.copy(quantized / name, folder / name)
    tensors = load(sd1_fp32[0])
    tensors[BIG_KEY] = tensors[BIG_KEY] * 1e4  # beyond ±448
    save_file(tensors, str(folder / "big.safetensors"))
    shutil.copy(sd1_fp32[1], folder / "b.safetensors")
    shutil.copy(sd1[0], folder / "a.safetensors")
    app, _ = create_app(str(folder))
    return TestClient(app), folder


def test_gguf_and_nf4_are_refused_by_name_over_http(standalone):
    client, folder = standalone
    before = set(os.listdir(folder))
    for name, words in EXPECTED.items():
        for body in ({"a": "a.safetensors", "b": name}, {"a": name, "b": "a.safetensors"}):
            answer = client.post("/alloy/v1/merge", json=body)
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert words in error and "\n" not in error, error
    assert set(os.listdir(folder)) == before


def test_an_fp8_save_over_http_is_range_checked_or_clamped(standalone):
    client, folder = standalone
    before = set(os.listdir(folder))
    body = {"a": "big.safetensors", "b": "b.safetensors", "alpha": 0.5, "save": {"name": "m8", "dtype": "fp8_e4m3fn"}}
    refused = client.post("/alloy/v1/merge", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert BIG_KEY in error and '"clamp": true' in error and "\n" not in error
    assert set(os.listdir(folder)) == before  # no file, no temporary file
    clamped = client.post("/alloy/v1/merge", json=dict(body, save=dict(body["save"], clamp=True)))
    assert clamped.status_code == 200, clamped.text
    out = load(clamped.json()["path"])
    a, b = load(folder / "big.safetensors"), load(folder / "b.safetensors")
    expected = (a[BIG_KEY].double() * 0.5 + b[BIG_KEY].double() * 0.5).clamp(-448, 448)
    assert out[BIG_KEY].dtype == torch.float8_e4m3fn
    assert out[BIG_KEY].float().abs().max() == 448
    step = (expected - out[BIG_KEY].double()).abs() / expected.abs().clamp(min=2**-6)
    assert step.max() <= 2**-4  # within half a step of e4m3fn's 3-bit mantissa
