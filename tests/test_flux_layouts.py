"""Flux in its three layouts (single file, BFL's transformer alone, diffusers' names), Chroma, schnell.

The diffusers file is built here from the single file by the test's own conversion table, so Alloy's
layout rules are checked against an independent statement of diffusers' names."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import load, metadata
from safetensors.torch import save_file

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.io.source import SourceModel

U = "model.diffusion_model."
_DOUBLE = {
    "img_mod.lin": ["norm1.linear"],
    "txt_mod.lin": ["norm1_context.linear"],
    "img_attn.qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
    "txt_attn.qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    "img_attn.proj": ["attn.to_out.0"],
    "txt_attn.proj": ["attn.to_add_out"],
    "img_mlp.0": ["ff.net.0.proj"],
    "img_mlp.2": ["ff.net.2"],
    "txt_mlp.0": ["ff_context.net.0.proj"],
    "txt_mlp.2": ["ff_context.net.2"],
}
_NORMS = {"img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
          "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k"}  # fmt: skip
_TOP = {"img_in": "x_embedder", "txt_in": "context_embedder", "final_layer.linear": "proj_out",
        "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
        "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
        "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
        "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
        "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
        "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2"}  # fmt: skip


def to_diffusers(canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' Flux transformer from a single-file state dict (the conversion diffusers documents)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in canonical.items():
        if not key.startswith(U):
            continue
        rest = key[len(U) :]
        parts = rest.split(".")
        if parts[0] == "double_blocks":
            n, module, param = parts[1], ".".join(parts[2:-1]), parts[-1]
            if module in _NORMS:
                out[f"transformer_blocks.{n}.{_NORMS[module]}.weight"] = t
                continue
            names = _DOUBLE[module]
            for name, chunk in zip(names, t.chunk(len(names))):
                out[f"transformer_blocks.{n}.{name}.{param}"] = chunk
        elif parts[0] == "single_blocks":
            n, module, param = parts[1], ".".join(parts[2:-1]), parts[-1]
            p = f"single_transformer_blocks.{n}."
            if module == "linear1":
                hidden = canonical[f"{U}single_blocks.{n}.linear2.weight"].shape[0]
                q, k, v, mlp = t.split([hidden, hidden, hidden, t.shape[0] - 3 * hidden])
                for name, chunk in (("attn.to_q", q), ("attn.to_k", k), ("attn.to_v", v), ("proj_mlp", mlp)):
                    out[f"{p}{name}.{param}"] = chunk
            else:
                name = {"linear2": "proj_out", "modulation.lin": "norm.linear",
                        "norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k"}[module]  # fmt: skip
                out[f"{p}{name}.{'weight' if param == 'scale' else param}"] = t
        elif rest.startswith("final_layer.adaLN_modulation.1."):
            shift, scale = t.chunk(2)
            out["norm_out.linear." + parts[-1]] = torch.cat([scale, shift])
        else:
            module, param = ".".join(parts[:-1]), parts[-1]
            out[f"{_TOP[module]}.{param}"] = t
    return {k: v.contiguous() for k, v in out.items()}


@pytest.fixture(scope="module")
def single(models):
    return [models(f"flux1_{r}", arch="flux", seed=s, scale=32, dtype=torch.float32) for r, s in (("a", 61), ("b", 62))]


@pytest.fixture(scope="module")
def diffusers(single, tmp_path_factory):
    folder = tmp_path_factory.mktemp("diffusers")
    paths = []
    for i, path in enumerate(single):
        target = folder / f"flux_d{i}.safetensors"
        save_file(to_diffusers(load(path)), str(target))
        paths.append(target)
    return paths


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib_merge", *map(str, args)], capture_output=True, text=True)


def test_each_layout_reads_as_the_single_file(single, diffusers, tmp_path):
    canonical = load(single[0])
    bfl = tmp_path / "bfl.safetensors"
    save_file({k[len(U) :]: v for k, v in canonical.items() if k.startswith(U)}, str(bfl))
    for path, layout in ((diffusers[0], "diffusers"), (bfl, "bfl")):
        source = SourceModel(str(path))
        try:
            assert source.layout == layout and source.arch.id == "flux" and source.arch.variant == ""
            diffuser = [k for k in canonical if k.startswith(U)]
            assert sorted(source.keys) == sorted(diffuser)
            for key in diffuser:
                assert torch.equal(source.read(key), canonical[key]), (layout, key)
                assert source.info(key).shape == tuple(canonical[key].shape)
        finally:
            source.close()


def test_synth_writes_the_diffusers_names(single, tmp_path):
    out = tmp_path / "d.safetensors"
    result = cli("synth", "flux", out, "--scale", 32, "--seed", 61, "--dtype", "fp32", "--layout", "diffusers")
    assert result.returncode == 0, result.stderr
    expected = to_diffusers(load(single[0]))
    got = load(out)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_merge_in_diffusers_layout_with_blocks(diffusers, single, tmp_path):
    out = tmp_path / "m.safetensors"
    result = cli("merge", "--a", diffusers[0], "--b", diffusers[1], "--blocks", "D0=1 S1-S3=0.25 *=0.5",
                 "--dtype", "fp32", "-o", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    a, b = load(single[0]), load(single[1])
    schema = SCHEMAS["flux"]
    reference = {}
    for key in a:
        if not key.startswith(U):
            continue
        slot = schema.slot_of(key)
        alpha = 1.0 if slot == "D00" else 0.25 if slot in ("S01", "S02", "S03") else 0.5
        reference[key] = ((1 - alpha) * a[key].double() + alpha * b[key].double()).float()
    expected = to_diffusers(reference)
    got = load(out)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
    assert metadata(out)["modelspec.architecture"] == "flux-1-dev"


def test_mixed_layouts_are_refused_before_reading_or_converted(diffusers, single, tmp_path):
    out = tmp_path / "mixed.safetensors"
    refused = cli("merge", "--a", diffusers[0], "--b", single[1], "-o", out)
    assert refused.returncode != 0 and not out.exists() and list(tmp_path.iterdir()) == []
    line = refused.stderr.strip()
    assert "diffusers layout" in line and "single-file layout" in line and "Traceback" not in refused.stderr
    converted = cli("merge", "--a", diffusers[0], "--b", single[1], "--alpha", 0.3, "--dtype", "fp32",
                    "--layout", "bfl", "-o", out)  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    a, b = load(single[0]), load(single[1])
    got = load(out)
    assert sorted(got) == sorted(k[len(U) :] for k in a if k.startswith(U))
    for key, t in got.items():
        ref = (0.7 * a[U + key].double() + 0.3 * b[U + key].double()).float()
        torch.testing.assert_close(t, ref, rtol=0, atol=1e-6)


def test_converting_a_single_file_leaves_its_encoders_out_with_a_note(single, tmp_path):
    out = tmp_path / "t.safetensors"
    result = cli("merge", "--a", single[0], "--b", single[1], "--layout", "diffusers", "--dtype", "fp32", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "text encoder and VAE tensors left out" in result.stderr
    assert all(not k.startswith(("text_encoders.", "vae.")) for k in load(out))
    refused = cli("merge", "--a", single[0], "--b", single[1], "--layout", "sideways", "-o", tmp_path / "x.safetensors")
    assert refused.returncode == 2 and "sideways" in refused.stderr
    for arch, layout in (("sd3", "bfl"), ("chroma", "diffusers")):
        synth = cli("synth", arch, tmp_path / "s.safetensors", "--scale", 64, "--layout", layout)
        assert (
            synth.returncode == 2
            and "not one Alloy writes" in synth.stderr
            and not (tmp_path / "s.safetensors").exists()
        )


def test_schnell_chroma_and_padded_block_names(models, tmp_path):
    schnell = models("flux_schnell", arch="flux", variant="schnell", scale=32)
    chroma = models("chroma_a", arch="chroma", scale=32)
    for path, arch, label in ((schnell, "flux", "Flux schnell"), (chroma, "chroma", "Chroma")):
        source = SourceModel(str(path))
        try:
            assert (source.arch.id, source.arch.label) == (arch, label)
        finally:
            source.close()
    assert not any("guidance_in" in k for k in load(schnell))
    assert SCHEMAS["flux"].slot_of(U + "distilled_guidance_layer.layers.0.in_layer.weight") == "IN"
    out = tmp_path / "s.safetensors"
    result = cli("merge", "--a", schnell, "--b", schnell, "--blocks", "D0-D2=1 S0=0 *=0.5", "-o", out)
    assert result.returncode == 0, result.stderr
    assert metadata(out)["modelspec.architecture"] == "flux-1-schnell"


def test_prediction_markers_are_kept_from_a_with_one_warning(models, tmp_path):
    """NoobAI-style v-prediction files carry empty `v_pred` and `ztsnr` keys; the WebUI samples by them."""
    plain = models("sdxl_pa", arch="sdxl", seed=71)
    vpred = tmp_path / "vpred.safetensors"
    tensors = load(plain) | {"v_pred": torch.empty(0), "ztsnr": torch.empty(0)}
    save_file(tensors, str(vpred), {"modelspec.prediction_type": "v"})
    out_v, out_e = tmp_path / "v.safetensors", tmp_path / "e.safetensors"
    kept = cli("merge", "--a", vpred, "--b", plain, "-o", out_v)
    assert kept.returncode == 0, kept.stderr
    dropped = cli("merge", "--a", plain, "--b", vpred, "-o", out_e)
    assert dropped.returncode == 0, dropped.stderr
    for result, a_is in ((kept, "v_ztsnr"), (dropped, "epsilon")):
        warnings = [line for line in result.stderr.splitlines() if "prediction markers" in line]
        assert len(warnings) == 1 and warnings[0].startswith(f"warning: model A is {a_is}"), result.stderr
    v, e = load(out_v), load(out_e)
    assert "v_pred" in v and "ztsnr" in v and "v_pred" not in e and "ztsnr" not in e
    assert metadata(out_v)["modelspec.prediction_type"] == "v"
    assert metadata(out_e)["modelspec.prediction_type"] == "epsilon"
    same = cli("merge", "--a", vpred, "--b", vpred, "-o", tmp_path / "s.safetensors")
    assert same.returncode == 0 and "prediction markers" not in same.stderr
