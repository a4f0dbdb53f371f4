"""Merging LoRAs into one (concat, svd), extracting a LoRA from two checkpoints, and the LoRA metadata."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess

import pytest
import torch
from helpers import load, metadata, write_lora
from safetensors.torch import save, save_file
from test_cli import cli, error_line
from test_lora_bake import reference_delta
from test_lora_file import SD1_MODULES

from lib_merge.errors import LoraFormatError, LoraMismatchError, ParameterError
from lib_merge.lora.extract import ExtractSettings, extract_lora
from lib_merge.lora.factor import Factoring, RankRule, factorise
from lib_merge.lora.merge import LoraInput, LoraMergeSettings, merge_loras
from lib_merge.lora.names import module_targets

TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"


def run(*args) -> subprocess.CompletedProcess:
    """The command line in this process (as `python -m lib_merge …`, without a new interpreter's start-up)."""
    from lib_merge.surfaces.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def module_delta(tensors: dict, name: str) -> torch.Tensor:
    """(alpha / rank) · up·down of an output module, flattened to [out, in·kh·kw]."""
    up, down = tensors[f"{name}.lora_up.weight"].double(), tensors[f"{name}.lora_down.weight"].double()
    scale = float(tensors[f"{name}.alpha"]) / down.shape[0]
    return scale * up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)


def optimum_error(delta: torch.Tensor, rank: int) -> float:
    """The Eckart–Young optimum: relative Frobenius error of the best rank-k approximation."""
    s = torch.linalg.svdvals(delta.reshape(delta.shape[0], -1).double())
    return float(s[rank:].square().sum().sqrt() / s.square().sum().sqrt())


# --- merge -----------------------------------------------------------------------------------


def test_concat_equals_baking_both_and_writes_the_true_sizes(sd1, tmp_path):
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    write_lora(one, sd1[0], SD1_MODULES, rank=2, alpha=1, seed=1)
    write_lora(two, sd1[0], SD1_MODULES[:2] + [TE_Q], rank=3, alpha=6, seed=2)
    out = tmp_path / "both.safetensors"
    proc = cli("lora", "merge", "--lora", f"{one}:0.8", "--lora", f"{two}:-0.5", "--method", "concat", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == str(out)
    assert proc.stdout.splitlines()[-2] == metadata(out)["alloy_lora_recipe_hash"]

    # applied, the merged LoRA equals both inputs at their strengths (baked by the engine)
    both = tmp_path / "baked_both.safetensors"
    merged = tmp_path / "baked_merged.safetensors"
    args = ("--model", sd1[0], "--dtype", "fp32", "--no-history")
    assert run("lora", "bake", *args, "--lora", f"{one}:0.8", "--lora", f"{two}:-0.5", "-o", both).returncode == 0
    assert run("lora", "bake", *args, "--lora", f"{out}:1", "-o", merged).returncode == 0
    a, x, y = load(sd1[0]), load(both), load(merged)
    changed = [k for k in a if not torch.equal(x[k], a[k].float())]
    assert len(changed) == len(SD1_MODULES) + 1
    for key in a:
        torch.testing.assert_close(y[key], x[key], rtol=0, atol=2e-3)  # the merged file is fp16

    tensors, meta = load(out), metadata(out)
    ranks = {n: tensors[f"{n}.lora_down.weight"].shape[0] for n in SD1_MODULES + [TE_Q]}
    assert ranks == {**dict.fromkeys(SD1_MODULES[:2], 5), SD1_MODULES[2]: 2, SD1_MODULES[3]: 2, TE_Q: 3}
    assert meta["ss_network_dim"] == "5" and meta["ss_network_alpha"] == "5.0"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "2.0"}  # the 3×3 conv module
    recipe = json.loads(meta["alloy_lora_recipe"])
    assert [i["strength"] for i in recipe["inputs"]] == [0.8, -0.5]
    assert recipe["inputs"][0]["sha256"] == hashlib.sha256(one.read_bytes()).hexdigest()


def test_concat_with_block_weights_scales_each_module_by_its_slot(sd1, tmp_path):
    one = tmp_path / "one.safetensors"
    write_lora(one, sd1[0], SD1_MODULES, rank=2, alpha=2, seed=3)
    build = merge_loras(LoraMergeSettings([LoraInput(str(one), 0.5, "OUTD")], "concat", model=str(sd1[0])))
    lora = load(one)
    tensors = build.tensors(torch.float32)
    # OUTD: BASE (text encoder) and OUT03…OUT06 → 1; IN01 and M00 → 0
    expected = {SD1_MODULES[0]: 0.0, SD1_MODULES[1]: 0.0, SD1_MODULES[2]: 0.5, SD1_MODULES[3]: 0.5}
    for name, factor in expected.items():
        reference = factor * reference_delta(lora, name, (lora[f"{name}.lora_up.weight"].shape[0], -1))
        torch.testing.assert_close(module_delta(tensors, name), reference, rtol=1e-5, atol=1e-7)


def test_svd_rerank_reaches_the_full_svd_optimum(sd1, tmp_path):
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    write_lora(one, sd1[0], SD1_MODULES, rank=4, alpha=4, seed=4)
    write_lora(two, sd1[0], SD1_MODULES, rank=4, alpha=2, seed=5)
    inputs = [LoraInput(str(one), 1.0), LoraInput(str(two), 0.7)]
    a, b = load(one), load(two)
    sums = {
        n: reference_delta(a, n, (a[f"{n}.lora_up.weight"].shape[0], -1))
        + 0.7 * reference_delta(b, n, (b[f"{n}.lora_up.weight"].shape[0], -1))
        for n in SD1_MODULES
    }
    for full in (True, False):
        rule = RankRule(rank=3)
        build = merge_loras(LoraMergeSettings(inputs, "svd", rule, Factoring(full_svd=full), str(sd1[0])))
        tensors = build.tensors(torch.float32)
        for name, total in sums.items():
            error = float((module_delta(tensors, name) - total).norm() / total.norm())
            best = optimum_error(total, 3)
            assert best > 0.01  # a real truncation (the sum has rank 8)
            assert error <= best * (1.0001 if full else 1.10), (name, error, best)
    # by energy: the smallest rank whose energy reaches the threshold
    build = merge_loras(LoraMergeSettings(inputs, "svd", RankRule(energy=0.9), Factoring(full_svd=True), str(sd1[0])))
    for name, total in sums.items():
        s = torch.linalg.svdvals(total).square()
        share = torch.cumsum(s, 0) / s.sum()
        assert build.modules[name].rank == int((share < 0.9 - 1e-9).sum()) + 1


def test_svd_merges_any_type_and_concat_refuses_loha_naming_it(sd1, tmp_path):
    shapes = dict(load(sd1[0]))
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    out_dim, in_dim = shapes[key].shape
    g = torch.Generator().manual_seed(6)
    name = SD1_MODULES[0]
    loha = {
        f"{name}.hada_w1_a": torch.randn(out_dim, 2, generator=g),
        f"{name}.hada_w1_b": torch.randn(2, in_dim, generator=g),
        f"{name}.hada_w2_a": torch.randn(out_dim, 2, generator=g),
        f"{name}.hada_w2_b": torch.randn(2, in_dim, generator=g),
        f"{name}.alpha": torch.tensor(1.0),
    }
    path = tmp_path / "loha.safetensors"
    save_file(loha, str(path))
    with pytest.raises(LoraFormatError, match="concat needs LoRA/LoCon inputs; use svd"):
        merge_loras(LoraMergeSettings([LoraInput(str(path))], "concat", model=str(sd1[0])))
    out = tmp_path / "out.safetensors"
    proc = run("lora", "merge", "--lora", path, "--method", "concat", "--model", sd1[0], "-o", out)
    assert proc.returncode != 0 and "concat needs LoRA/LoCon inputs; use svd" in error_line(proc)
    assert not out.exists()

    full_rank = min(out_dim, in_dim)
    build = merge_loras(
        LoraMergeSettings(
            [LoraInput(str(path), 0.5)], "svd", RankRule(rank=full_rank), Factoring(full_svd=True), str(sd1[0])
        )  # fmt: skip
    )
    expected = (
        0.5
        * 0.5
        * (loha[f"{name}.hada_w1_a"] @ loha[f"{name}.hada_w1_b"])
        * (loha[f"{name}.hada_w2_a"] @ loha[f"{name}.hada_w2_b"])
    )
    torch.testing.assert_close(module_delta(build.tensors(torch.float32), name).float(), expected, rtol=1e-4, atol=1e-4)


def test_bad_merge_inputs_are_refused_with_nothing_written(sd1, sdxl, tmp_path):
    from test_lora_file import SDXL_MODULES

    xl = tmp_path / "xl.safetensors"
    write_lora(xl, sdxl[0], SDXL_MODULES, rank=2)
    with pytest.raises(LoraMismatchError, match="SDXL"):
        merge_loras(LoraMergeSettings([LoraInput(str(xl))], "concat", model=str(sd1[0])))
    # the WebUI's loaded SD1 model is only a hint: SDXL LoRAs merge without it
    hinted = LoraMergeSettings([LoraInput(str(xl))], "concat", model=str(sd1[0]), model_if_same_base=True)
    assert merge_loras(hinted).arch_id == "sdxl"
    with pytest.raises(ParameterError, match="rank 0"):
        RankRule(rank=0)
    good = tmp_path / "good.safetensors"
    write_lora(good, sd1[0], SD1_MODULES, rank=2)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    out = tmp_path / "out.safetensors"
    proc = run("lora", "merge", "--lora", good, "--lora", f"{cut}:0.5", "-o", out)
    assert proc.returncode != 0 and "cut.safetensors" in error_line(proc)
    out.write_bytes(b"keep me")
    proc = run("lora", "merge", "--lora", good, "-o", out)
    assert proc.returncode == 5 and "exists" in error_line(proc)
    assert out.read_bytes() == b"keep me"


# --- extract ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned_sd2(models, tmp_path_factory):
    """An SD2 base B and a fine-tune A = B + a rank-3 change + small noise on every targeted module
    except the text encoder's, which stays equal to B's."""
    base = models("sd2_base", arch="sd2", seed=31, dtype=torch.float32)
    tensors = load(base)
    g = torch.Generator().manual_seed(32)
    from lib_merge.lora.file import base_shapes  # noqa: F401 - the layout used by module_targets

    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    for target in {t.target.key for t in module_targets(shapes, "sd2") if not t.text_encoder}:
        w = tensors[target]
        flat = w.reshape(w.shape[0], -1)
        low = torch.randn(flat.shape[0], 3, generator=g) @ torch.randn(3, flat.shape[1], generator=g)
        tensors[target] = (flat + 0.05 * low + 0.002 * torch.randn(flat.shape, generator=g)).reshape(w.shape)
    tuned = tmp_path_factory.mktemp("tuned") / "sd2_tuned.safetensors"
    save_file(tensors, str(tuned))
    return tuned, base


@pytest.mark.parametrize("full", [True, False])
def test_extraction_error_against_the_full_svd_optimum(tuned_sd2, full):
    a, b = tuned_sd2
    settings = ExtractSettings(str(a), str(b), rule=RankRule(rank=4), factoring=Factoring(full_svd=full, seed=1))
    build = extract_lora(settings)
    ta, tb = load(a), load(b)
    shapes = {k: tuple(v.shape) for k, v in ta.items()}
    targets = {t.name: t for t in module_targets(shapes, "sd2")}
    assert build.modules and all(not targets[n].text_encoder for n in build.modules)
    assert any("text encoder is left out" in note for note in build.notes)
    assert any(targets[n].spatial for n in build.modules)  # 3×3 convs are extracted too
    tensors = build.tensors(torch.float32)
    for name in build.modules:
        key = targets[name].target.key
        delta = (ta[key].double() - tb[key].double()).reshape(ta[key].shape[0], -1)
        error = float((module_delta(tensors, name) - delta).norm() / delta.norm())
        best = optimum_error(delta, 4)
        assert error <= best * (1.0001 if full else 1.10) + 1e-6, (name, error, best)


def test_extraction_of_q_k_v_slices_and_text_encoders_and_seeded_output(tuned_sd2, tmp_path):
    a, b = tuned_sd2
    tensors = load(a)
    key = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
    width = tensors[key].shape[1]
    tensors[key][width : 2 * width] += 0.01  # a change on k only
    changed = tmp_path / "te_changed.safetensors"
    save_file(tensors, str(changed))
    out = tmp_path / "ex.safetensors"
    proc = run("lora", "extract", "--a", changed, "--b", b, "--rank", "2", "--conv-rank", "0", "--dtype", "fp32",
               "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lora, meta = load(out), metadata(out)
    k = "lora_te_text_model_encoder_layers_0_self_attn_k_proj"
    torch.testing.assert_close(module_delta(lora, k).float(), torch.full((width, width), 0.01), rtol=0, atol=1e-5)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" not in {n.rsplit(".", 2)[0] for n in lora}
    assert not any(v.dim() == 4 and v.shape[-1] == 3 for v in lora.values())  # --conv-rank 0: no 3×3 convs
    assert meta["ss_base_model_version"] == "sd_v2" and meta["ss_v2"] == "True"
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-512/lora"
    assert meta["ss_network_dim"] == "2" and "ss_network_args" not in meta
    again = tmp_path / "again.safetensors"
    run("lora", "extract", "--a", changed, "--b", b, "--rank", "2", "--conv-rank", "0", "--dtype", "fp32", "-o", again)
    assert all(torch.equal(lora[k], v) for k, v in load(again).items())  # seeded: the same file content


def test_extracted_lora_baked_onto_b_gives_back_a(sd1_fp32, tmp_path):
    b = sd1_fp32[1]
    tb = load(b)
    shapes = {k: tuple(v.shape) for k, v in tb.items()}
    targets = module_targets(shapes, "sd1")
    # A = B + an exactly rank-2 change on three modules (a linear, a 3×3 conv, a text-encoder linear)
    chosen = [t for t in targets if "attn2_to_v" in t.name][:1] + [t for t in targets if t.spatial][:1]
    chosen += [t for t in targets if t.text_encoder][:1]
    g = torch.Generator().manual_seed(7)
    tuned = dict(tb)
    for t in chosen:
        w = tb[t.target.key]
        low = torch.randn(w.shape[0], 2, generator=g) @ torch.randn(2, w[0].numel(), generator=g)
        tuned[t.target.key] = w + 0.1 * low.reshape(w.shape)
    path = tmp_path / "tuned.safetensors"
    save_file(tuned, str(path))
    lora = tmp_path / "ex.safetensors"
    build = extract_lora(ExtractSettings(str(path), str(b), rule=RankRule(rank=2)))
    assert sorted(build.modules) == sorted(t.name for t in chosen)
    from lib_merge.lora.write import write_lora as write

    write(build, str(lora), torch.float32)
    out = tmp_path / "back.safetensors"
    proc = run("lora", "bake", "--model", b, "--lora", lora, "--dtype", "fp32", "--no-history", "-o", out)
    assert proc.returncode == 0, proc.stderr
    back = load(out)
    for key, value in tuned.items():
        if value.is_floating_point():
            torch.testing.assert_close(back[key], value.float(), rtol=0, atol=1e-4)


def test_extraction_of_different_architectures_is_refused(sd1, sdxl, tmp_path):
    out = tmp_path / "x.safetensors"
    proc = run("lora", "extract", "--a", sd1[0], "--b", sdxl[0], "-o", out)
    assert proc.returncode != 0 and "SDXL" in error_line(proc) and not out.exists()


# --- metadata --------------------------------------------------------------------------------


def test_metadata_hashes_are_the_additional_networks_hashes(sd1, tmp_path):
    one = tmp_path / "one.safetensors"
    write_lora(one, sd1[0], SD1_MODULES, rank=2, alpha=1)
    out = tmp_path / "merged.safetensors"
    assert run("lora", "merge", "--lora", one, "--lora", f"{one}:0.5", "-o", out).returncode == 0
    meta, data = metadata(out), out.read_bytes()
    # the tensors written again with only the ss_* fields: the bytes after the header, and 64 KiB at 1 MiB
    ss_only = save(load(out), {k: v for k, v in meta.items() if k.startswith("ss_")})
    header = 8 + int.from_bytes(ss_only[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(ss_only[header:]).hexdigest()
    assert meta["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    own_header = 8 + int.from_bytes(data[:8], "little")
    assert meta["modelspec.hash_sha256"] == "0x" + hashlib.sha256(data[own_header:]).hexdigest()
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_output_name"] == "merged"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_mixed_precision"] == "fp16"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert metadata(one) == {}  # the input is not touched


def test_sdxl_lora_metadata_and_factorising_a_zero_change():
    assert factorise(torch.zeros(4, 3), RankRule(rank=2), Factoring()) is None
    from lib_merge.lora.write import LoraBuild, OutModule, training_metadata

    build = LoraBuild({"lora_te1_x": OutModule(torch.ones(4, 2), torch.ones(2, 3), 2.0)}, "sdxl")
    meta = training_metadata(build, "/tmp/style.safetensors", torch.bfloat16)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_mixed_precision"] == "bf16"


def test_hostile_values_and_an_input_as_output_are_refused(sd1, tmp_path):
    one = tmp_path / "one.safetensors"
    write_lora(one, sd1[0], SD1_MODULES, rank=2)
    before = one.read_bytes()
    proc = run("lora", "merge", "--lora", one, "--overwrite", "-o", one)
    assert proc.returncode != 0 and "input" in error_line(proc) and one.read_bytes() == before
    proc = run("lora", "merge", "--lora", f"{one}:1e999", "-o", tmp_path / "inf.safetensors")
    assert proc.returncode != 0 and "not a finite number" in error_line(proc)
    with pytest.raises(ParameterError, match="network alpha 0"):
        extract_lora(ExtractSettings(str(sd1[0]), str(sd1[1]), output_alpha=0.0))
    proc = run("lora", "extract", "--a", one, "--b", sd1[1], "-o", tmp_path / "x.safetensors")
    assert proc.returncode != 0 and "one.safetensors" in error_line(proc)
    assert not (tmp_path / "inf.safetensors").exists() and not (tmp_path / "x.safetensors").exists()


def test_sdxl_extraction_writes_kohyas_names_for_both_text_encoders(sdxl):
    from pathlib import Path

    build = extract_lora(ExtractSettings(str(sdxl[0]), str(sdxl[1]), rule=RankRule(rank=2), skip_convs=True))
    listing = Path(__file__).parent / "data" / "kohya_sdxl_modules.txt"
    real = {line.split("\t")[0] for line in listing.read_text().splitlines() if line}
    names = set(build.modules)
    assert names <= real
    assert any(n.startswith("lora_te1_") for n in names)
    assert "lora_te2_text_model_encoder_layers_0_self_attn_v_proj" in names
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in names
    from lib_merge.lora.write import training_metadata

    assert training_metadata(build, "x.safetensors", torch.float16)["ss_base_model_version"] == "sdxl_base_v1-0"


def test_non_finite_values_are_refused_naming_the_module_or_key(sd1_fp32, tmp_path):
    good = tmp_path / "good.safetensors"
    write_lora(good, sd1_fp32[0], SD1_MODULES, rank=2)
    tensors = load(good)
    tensors[f"{SD1_MODULES[1]}.lora_up.weight"][0, 0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(tensors, str(nan))
    proc = run("lora", "merge", "--lora", nan, "-o", tmp_path / "out.safetensors")
    assert proc.returncode != 0 and SD1_MODULES[1] in error_line(proc) and "NaN" in error_line(proc)
    model = load(sd1_fp32[1])
    key = "model.diffusion_model.middle_block.1.proj_out.weight"
    model[key][0, 0] = float("inf")
    broken = tmp_path / "broken.safetensors"
    save_file(model, str(broken))
    proc = run("lora", "extract", "--a", broken, "--b", sd1_fp32[0], "-o", tmp_path / "ex.safetensors")
    assert proc.returncode == 6 and key in error_line(proc)
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "ex.safetensors").exists()
