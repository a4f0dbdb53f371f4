"""The Toolkit on miniature checkpoints and crafted broken files: prune, convert, components, fingerprints."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest
import torch
from helpers import load, metadata
from safetensors.torch import save_file
from test_cli import error_line
from test_lora_merge_extract import run

from lib_merge.errors import PrecisionError, ShapeMismatchError
from lib_merge.toolkit.components import replace_component
from lib_merge.toolkit.fingerprint import fingerprint, metric_number
from lib_merge.toolkit.prune import RewriteOptions, prune_file

CLIP_POS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
SD1_PREFIXES = ("model.diffusion_model.", "cond_stage_model.transformer.", "first_stage_model.")


@pytest.fixture
def bloated(sd1_fp32, tmp_path):
    """An fp32 SD1 with EMA, schedule buffers, an embedding manager and float position_ids that drift."""
    tensors = load(sd1_fp32[0])
    ema = {f"model_ema.{k[len('model.') :].replace('.', '')}": v.clone() for k, v in list(tensors.items())[:5]}
    tensors |= ema
    tensors["alphas_cumprod"] = torch.linspace(0.99, 0.01, 1000)
    tensors["embedding_manager.embedder.x"] = torch.ones(4, 4)
    positions = torch.arange(77, dtype=torch.float32)[None]
    positions[0, 76] = 75.9975
    positions[0, 3] = 4.0
    tensors[CLIP_POS] = positions
    path = tmp_path / "bloated.safetensors"
    save_file(tensors, str(path), {"ss_keep": "me"})
    return path, tensors, set(ema)


def test_prune_keeps_the_components_as_fp16_and_fixes_position_ids(bloated, tmp_path):
    path, tensors, ema = bloated
    out = tmp_path / "pruned.safetensors"
    report = prune_file(str(path), str(out), RewriteOptions(fix_position_ids=True))
    pruned = load(out)
    components = {k for k in tensors if k.startswith(SD1_PREFIXES)}
    assert set(pruned) == components
    for key in components - {CLIP_POS}:
        expected = tensors[key].to(torch.float16) if tensors[key].is_floating_point() else tensors[key]
        assert torch.equal(pruned[key], expected), key
    assert torch.equal(pruned[CLIP_POS], torch.arange(77)[None]) and pruned[CLIP_POS].dtype == torch.int64
    broken = next(r for r in report.position_ids if r.key == CLIP_POS).broken
    assert broken == [(3, 4.0), (76, pytest.approx(75.9975))]
    lines = report.lines()
    assert lines[0].startswith(f"{len(tensors):,} → {len(components):,} keys")
    assert any("broken: 2 (4 at 3, 75.9975 at 76)" in line for line in lines)
    assert metadata(out)["ss_keep"] == "me"
    keep = prune_file(str(path), str(tmp_path / "ema.safetensors"), RewriteOptions(keep_ema=True, dtype=None))
    assert set(load(keep.written.path)) == components | ema
    floating = next(k for k in sorted(ema) if tensors[k].is_floating_point())
    assert load(keep.written.path)[floating].dtype == torch.float32  # dtype None keeps the file's


def test_cli_prune_prints_the_hash_and_path_and_never_replaces_the_input(bloated, tmp_path):
    path, _, _ = bloated
    proc = run("prune", path, "--fix-position-ids")
    out = tmp_path / "bloated-pruned.safetensors"
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [hashlib.sha256(out.read_bytes()).hexdigest(), str(out)]
    assert "fixed" in proc.stderr
    before = path.read_bytes()
    proc = run("prune", path, "-o", path, "--overwrite")
    assert proc.returncode == 5 and "input" in error_line(proc) and path.read_bytes() == before


def test_fp16_overflow_is_refused_naming_the_key_unless_clamped(sd1_fp32, tmp_path):
    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load(sd1_fp32[0]).items()}
    key = "model.diffusion_model.out.2.weight"
    tensors[key][0, 0, 0, 0] = 1.2e5
    tensors[key][0, 0, 0, 1] = -7e4
    path = tmp_path / "wide.safetensors"
    save_file(tensors, str(path))
    out = tmp_path / "narrow.safetensors"
    with pytest.raises(PrecisionError, match=f"key {key} has values up to 1.2e\\+05 which overflow fp16"):
        prune_file(str(path), str(out), RewriteOptions(prune=False))
    assert not out.exists() and not list(tmp_path.glob("*alloy-tmp*"))
    proc = run("convert", path, "--dtype", "fp16", "--clamp", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert f"clamped 2 values of {key} to ±65504" in proc.stderr
    narrow = load(out)[key]
    assert narrow[0, 0, 0, 0] == 65504 and narrow[0, 0, 0, 1] == -65504


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/alloy-pickle-ran", "w"))


def test_convert_reads_ckpt_weights_only_and_lists_what_it_drops(sd1_fp32, tmp_path):
    import os

    state = load(sd1_fp32[0])
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "global_step": 1200, "epoch": 3}, ckpt)
    proc = run("convert", ckpt, "--dtype", "fp16")
    assert proc.returncode == 0, proc.stderr
    assert "dropped entries that are no tensors: global_step, epoch" in proc.stderr
    converted = load(tmp_path / "old-converted.safetensors")
    assert all(torch.equal(converted[k], v.half() if v.is_floating_point() else v) for k, v in state.items())
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"x": _Boom()}}, f)
    if os.path.exists("/tmp/alloy-pickle-ran"):
        os.unlink("/tmp/alloy-pickle-ran")
    proc = run("convert", evil, "--dtype", "fp16")
    assert proc.returncode == 4 and "evil.ckpt" in error_line(proc)
    assert not os.path.exists("/tmp/alloy-pickle-ran") and not (tmp_path / "evil-converted.safetensors").exists()


def test_extract_and_replace_a_component(sd1, sdxl, tmp_path):
    proc = run("extract", sd1[1], "--component", "vae", "-o", tmp_path / "vae.safetensors")
    assert proc.returncode == 0, proc.stderr
    b, vae = load(sd1[1]), load(tmp_path / "vae.safetensors")
    assert vae and set(vae) == {k[len("first_stage_model.") :] for k in b if k.startswith("first_stage_model.")}
    assert all(torch.equal(vae[k], b["first_stage_model." + k]) for k in vae)
    out = tmp_path / "a_with_b_vae.safetensors"
    replace_component(str(sd1[0]), "vae", str(tmp_path / "vae.safetensors"), str(out))
    a, replaced = load(sd1[0]), load(out)
    assert set(replaced) == set(a)
    for key, value in a.items():
        expected = b[key] if key.startswith("first_stage_model.") else value
        assert torch.equal(replaced[key], expected), key
    # SDXL's VAE has SD1's layout and may be taken; its UNet may not
    sdxl_vae = tmp_path / "sdxl_vae_in_sd1.safetensors"
    replace_component(str(sd1[0]), "vae", str(sdxl[0]), str(sdxl_vae))
    with pytest.raises(ShapeMismatchError, match="keys only in"):
        replace_component(str(sd1[0]), "unet", str(sdxl[0]), str(tmp_path / "no.safetensors"))
    assert not (tmp_path / "no.safetensors").exists()
    proc = run("extract", sd1[0], "--component", "clip_g", "-o", tmp_path / "x.safetensors")
    assert proc.returncode != 0 and "clip_g" in error_line(proc) and "unet, clip_l, vae" in error_line(proc)


def test_fingerprints_against_the_formulas_and_equal_for_fp32_and_fp16(sd1_fp32, tmp_path):
    path = sd1_fp32[0]
    found = fingerprint(str(path))
    tensors = load(path)
    data = path.read_bytes()
    assert found.sha256 == hashlib.sha256(data).hexdigest() and found.short_hash == found.sha256[:10]
    assert found.legacy_hash == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]

    def m(keys):
        return sum(float((torch.sigmoid(tensors[k].half().float()) - 0.5).double().sum()) for k in keys)

    vae_keys = [k for k in tensors if k.startswith("first_stage_model.") and ("encoder." in k or "decoder." in k)]
    clip_keys = [k for k in tensors if k.startswith("cond_stage_model.") and "mlp." in k and ".23." not in k]
    unet_keys = [k for k in tensors if k.startswith("model.diffusion_model.")]
    for name, keys, b, k in (("vae", vae_keys, 17870.7051, 10000), ("clip_l", clip_keys, -2097.8596, 1000000),
                             ("unet", unet_keys, -6131.5400, 10000)):  # fmt: skip
        n = int(abs(m(keys) / b - 1) * k)
        while n >= 10000:
            n -= 5000
        assert found.numbers[name] == n == metric_number(m(keys), name)
    digest = hashlib.sha256()
    for key in sorted(k[len("first_stage_model.") :] for k in tensors if k.startswith("first_stage_model.")):
        t = tensors["first_stage_model." + key]
        digest.update(key.encode() + b"\0" + t.half().numpy().tobytes())
    assert found.components["vae"] == digest.hexdigest()[:12]
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(half))
    assert fingerprint(str(half)).components == found.components
    assert metric_number(17870.7051 * (1 + 0.29825), "vae") == 2982
    assert any("VAE 2982 = NAI VAE" in line for line in _with_vae_number(found, 2982).lines())


def _with_vae_number(found, n):
    found.numbers["vae"] = n
    return found


def test_inspect_reports_what_is_wrong_with_a_file(bloated, sd1, sdxl, tmp_path):
    from lib_merge.toolkit.inspect import format_full_report, full_report

    path, tensors, ema = bloated
    report = full_report(str(path))
    text = format_full_report(report)
    assert report["ema_keys"] == len(ema) and f"EMA: {len(ema)} keys" in text
    assert report["junk"] == {"embedding_manager": 64}
    wide = sum(t.numel() * 4 for k, t in tensors.items() if t.dtype == torch.float32)
    assert report["fp16_saves_bytes"] == wide // 2
    assert f"position_ids {CLIP_POS} (float32): broken: 2 (4 at 3, 75.9975 at 76)" in text
    assert report["metadata"] == {"ss_keep": "me"} and "  sd1 (detected): all 1,131" in text
    # the JSON object holds every field of the header report
    from lib_merge.io.report import inspect_model

    assert set(inspect_model(str(path))) <= set(report)

    clip_keys = sum(1 for k in load(sd1[0]) if k.startswith("cond_stage_model."))
    no_clip = {k: v for k, v in load(sd1[0]).items() if not k.startswith("cond_stage_model.")}
    no_clip["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.ones(4)  # SDXL's
    broken = tmp_path / "no_clip.safetensors"
    save_file(no_clip, str(broken))
    text = format_full_report(full_report(str(broken)))
    assert "components missing: clip_l" in text
    assert f"  sd1 (detected): missing {clip_keys} of 1,131 (first: cond_stage_model." in text
    assert "useless keys (another architecture's): 1, 16 bytes: conditioner.embedders.0" in text

    nai = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
           for k, v in load(sd1[0]).items()}  # fmt: skip
    nai_path = tmp_path / "nai.safetensors"
    save_file(nai, str(nai_path))
    text = format_full_report(full_report(str(nai_path)))
    renamed = sum(1 for k in nai if k.startswith("cond_stage_model.transformer.") and ".text_model." not in k)
    assert f"CLIP keys renamed from NAI layout: {renamed}" in text and "components missing" not in text

    text = format_full_report(full_report(str(sdxl[0])))
    assert "architecture: SDXL (sdxl)" in text and "  sdxl (detected): all 2,515" in text


def test_autoprune_moves_what_it_pruned_and_keeps_what_failed(bloated, sd1, tmp_path, monkeypatch):
    from lib_merge.toolkit import autoprune as module

    path, _, _ = bloated
    inbox, models = tmp_path / "Autoprune", tmp_path / "models"
    inbox.mkdir()
    (models / "Stable-diffusion").mkdir(parents=True)
    (inbox / "model.safetensors").write_bytes(path.read_bytes())
    proc = run("extract", sd1[0], "--component", "vae", "-o", inbox / "my_vae.safetensors")
    assert proc.returncode == 0
    (inbox / "broken.ckpt").write_bytes(b"not a pickle")
    (inbox / "notes.txt").write_text("left alone")
    (models / "Stable-diffusion" / "model.safetensors").write_bytes(b"taken")  # a name clash
    # a save that fails after its file is written: the source stays (in Failed/), no output is left
    real_verify = module._verify

    def flaky_verify(target, keys):
        if "second" in target:
            raise OSError("simulated verify failure")
        real_verify(target, keys)

    monkeypatch.setattr(module, "_verify", flaky_verify)
    (inbox / "second.safetensors").write_bytes(path.read_bytes())
    results = {
        os.path.basename(r.source): r for r in module.autoprune(str(inbox), module.Destinations.under(str(models)))
    }
    assert results["model.safetensors"].output == str(models / "Stable-diffusion" / "model (1).safetensors")
    assert (models / "Stable-diffusion" / "model.safetensors").read_bytes() == b"taken"
    assert set(load(results["model.safetensors"].output)) == set(load(sd1[0]))
    assert results["my_vae.safetensors"].output == str(models / "VAE" / "my_vae.safetensors")
    assert not results["second.safetensors"].ok and not results["broken.ckpt"].ok
    failed = inbox / "Failed"
    assert (failed / "second.safetensors").read_bytes() == path.read_bytes()
    assert "simulated verify failure" in (failed / "second.safetensors.error.txt").read_text()
    assert (failed / "broken.ckpt.error.txt").read_text().startswith("broken.ckpt cannot be read")
    assert not (models / "Stable-diffusion" / "second.safetensors").exists()
    assert sorted(os.listdir(inbox)) == [".alloy-autoprune.lock", "Failed", "notes.txt"]
    import fcntl

    from lib_merge.errors import BusyError

    with open(inbox / ".alloy-autoprune.lock", "a") as held:  # another run holds the folder
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(BusyError, match="already running"):
            module.autoprune(str(inbox), module.Destinations.under(str(models)))


def test_build_a_checkpoint_from_its_component_files(sd1, tmp_path):
    parts = {}
    for name in ("unet", "clip_l", "vae"):
        parts[name] = tmp_path / f"{name}.safetensors"
        assert run("extract", sd1[0], "--component", name, "-o", parts[name]).returncode == 0
    out = tmp_path / "rebuilt.safetensors"
    args = [a for name, path in parts.items() for a in ("--component", f"{name}={path}")]
    proc = run("build", "--arch", "sd1", *args, "-o", out)
    assert proc.returncode == 0, proc.stderr
    original, rebuilt = load(sd1[0]), load(out)
    kept = {k for k in original if k.startswith(SD1_PREFIXES)}
    assert set(rebuilt) == kept and all(torch.equal(rebuilt[k], original[k]) for k in kept)
    proc = run("build", "--arch", "sd1", *args[:4], "-o", tmp_path / "half.safetensors")
    assert proc.returncode != 0 and "needs its vae too" in error_line(proc)
    proc = run(
        "build", "--arch", "sd1", "--component", f"vae={parts['unet']}", *args[:4], "-o", tmp_path / "x.safetensors"
    )
    assert proc.returncode != 0 and "not vae" in error_line(proc)
