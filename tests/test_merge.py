"""Merges against reference computations written here, on miniature SD1 and SDXL models."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import load, metadata

from lib_merge.arch.blocks import schema_for
from lib_merge.arch.registry import ARCHITECTURES
from lib_merge.engine.options import CancelToken, EngineOptions
from lib_merge.engine.plan import is_mergeable
from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.errors import ArchMismatchError, Cancelled, NonFiniteError, ShapeMismatchError
from lib_merge.io import save_state_dict
from lib_merge.io.synth import SynthSpec, synth_shapes, write_synthetic
from lib_merge.recipe import parse_recipe
from lib_merge.recipe.vectors import parse_vector

FORMULAS = {
    "weighted_sum": lambda a, b, c, al, be: (1 - al) * a + al * b,
    "add_difference": lambda a, b, c, al, be: a + al * (b - c),
    "triple_sum": lambda a, b, c, al, be: (1 - al - be) * a + al * b + be * c,
    "sum_twice": lambda a, b, c, al, be: (1 - be) * ((1 - al) * a + al * b) + be * c,
}
THREE = {"add_difference", "triple_sum", "sum_twice"}


def recipe(method: str, paths, **params) -> str:
    lines = ["alloy-recipe 1"]
    names = "ABC"[: len(paths)]
    lines += [f'{n} = model("{p}")' for n, p in zip(names, paths)]
    args = ", ".join(list(names) + [f"{k}={v}" for k, v in params.items()])
    lines.append(f"merged = {method}({args})")
    return "\n".join(lines) + "\n"


def merge(text: str, out, dtype=torch.float16, **kw):
    engine = kw.pop("engine", None)
    return merge_to_file(parse_recipe(text), SaveOptions(str(out), dtype=dtype, **kw), engine)


def component_keys(arch_id: str, tensors: dict) -> list[str]:
    arch = ARCHITECTURES[arch_id]
    return [k for k, t in tensors.items() if arch.component_of(k) and is_mergeable(k, t.dtype)]


@pytest.mark.parametrize("method", sorted(FORMULAS))
def test_modes_match_the_float64_reference(method, sd1_fp32, tmp_path):
    paths = sd1_fp32 if method in THREE else sd1_fp32[:2]
    al, be = 0.3, 0.45
    params = {"alpha": al} | ({"beta": be} if method in ("triple_sum", "sum_twice") else {})
    result = merge(recipe(method, paths, **params), tmp_path / "out.safetensors", torch.float32)
    out, a, b, c = load(result.path), *(load(p) for p in sd1_fp32)
    keys = component_keys("sd1", a)
    assert len(keys) == 1130
    for k in keys:
        ref = FORMULAS[method](a[k].double(), b[k].double(), c[k].double(), al, be)
        assert out[k].dtype == torch.float32
        assert ((out[k].double() - ref).abs() <= 1e-6 * ref.abs().clamp(min=1)).all(), k
    pos = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    assert out[pos].dtype == torch.int64 and torch.equal(out[pos], a[pos])


@pytest.mark.parametrize("method", sorted(FORMULAS))
def test_fp16_output_is_the_reference_rounded(method, sd1, tmp_path):
    paths = sd1 if method in THREE else sd1[:2]
    result = merge(
        recipe(method, paths, alpha=0.7, **({"beta": 0.2} if method in ("triple_sum", "sum_twice") else {})),
        tmp_path / "o.safetensors",
    )
    out, a, b, c = load(result.path), *(load(p) for p in sd1)
    for k in component_keys("sd1", a):
        ref = FORMULAS[method](a[k].double(), b[k].double(), c[k].double(), 0.7, 0.2).half()
        ulps = (_ordered(out[k]) - _ordered(ref)).abs()
        assert out[k].dtype == torch.float16 and int(ulps.max()) <= 1, k


def _ordered(t: torch.Tensor) -> torch.Tensor:
    """fp16 bit patterns as integers that count ulps across zero (-0.0 and 0.0 are equal)."""
    i = t.view(torch.int16).int()
    return torch.where(i < 0, -32768 - i, i)


def _constant_model(path, value: float) -> str:
    shapes = synth_shapes(SynthSpec(arch="sd1", components=("unet",)))
    save_state_dict(str(path), {k: torch.full(s, value, dtype=torch.float32) for k, (s, _) in shapes.items()})
    return str(path)


@pytest.mark.parametrize(
    "method, c_value, params, expected",
    [
        ("weighted_sum", 5, {"alpha": 0.25}, 1.5),
        ("add_difference", 2, {"alpha": 0.5}, 1.5),
        ("triple_sum", 5, {"alpha": 0.2, "beta": 0.3}, 2.6),
        ("sum_twice", 5, {"alpha": 0.5, "beta": 0.5}, 3.5),
    ],
)
def test_spec_numeric_checks(tmp_path, method, c_value, params, expected):
    paths = [_constant_model(tmp_path / f"{n}.safetensors", v) for n, v in (("a", 1), ("b", 3), ("c", c_value))]
    paths = paths if method in THREE else paths[:2]
    out = load(merge(recipe(method, paths, **params), tmp_path / "o.safetensors", torch.float32).path)
    values = torch.cat([t.reshape(-1) for t in out.values()])
    assert torch.allclose(values, torch.full_like(values, expected), atol=1e-6)


def test_block_weights_give_each_key_its_block_value(sd1_fp32, tmp_path):
    spec = "IN00=0.3 OUT05-OUT11=1 M00=0 *=0.5"
    text = recipe("weighted_sum", sd1_fp32[:2], alpha=f'blocks("{spec}")')
    out = load(merge(text, tmp_path / "o.safetensors", torch.float32).path)
    a, b = load(sd1_fp32[0]), load(sd1_fp32[1])
    schema = schema_for("sd1")
    vector = parse_vector(spec, schema).vector
    seen = set()
    for k in component_keys("sd1", a):
        slot = schema.slot_of(k)
        al = vector.value(schema, slot)
        seen.add(al)
        ref = (1 - al) * a[k].double() + al * b[k].double()
        assert torch.allclose(out[k].double(), ref, atol=1e-6), (k, slot)
        if al == 0:
            assert torch.equal(out[k], a[k]), k  # alpha 0 keeps A exactly
        if al == 1:
            assert torch.equal(out[k], b[k]), k
    assert seen == {0.0, 0.3, 0.5, 1.0}


def test_vae_follows_base_unless_named(sd1_fp32, tmp_path):
    a, b = load(sd1_fp32[0]), load(sd1_fp32[1])
    vae = "first_stage_model.decoder.conv_in.weight"
    follow = load(
        merge(
            recipe("weighted_sum", sd1_fp32[:2], alpha='blocks("BASE=1 *=0")'),
            tmp_path / "f.safetensors",
            torch.float32,
        ).path
    )
    assert torch.equal(follow[vae], b[vae])
    own = load(
        merge(
            recipe("weighted_sum", sd1_fp32[:2], alpha='blocks("BASE=1 *=0 VAE=0")'),
            tmp_path / "v.safetensors",
            torch.float32,
        ).path
    )
    assert torch.equal(own[vae], a[vae])


def test_preset_on_sdxl_uses_the_20_value_form(sdxl, tmp_path):
    result = merge(
        recipe("weighted_sum", sdxl[:2], alpha='preset("GRAD_V")'), tmp_path / "x.safetensors", torch.float32
    )
    out, a, b = load(result.path), load(sdxl[0]), load(sdxl[1])
    k = "model.diffusion_model.middle_block.0.in_layers.2.weight"  # M00: GRAD_V is 0 in the middle
    assert torch.allclose(out[k], a[k].float())
    k = "model.diffusion_model.input_blocks.0.0.weight"  # IN00: 1
    assert torch.allclose(out[k], b[k].float())
    assert "IN00=1.0 IN01=0.8888888888888888" in result.recipe_text


def test_26_value_vector_on_sdxl_is_mapped(sdxl, tmp_path):
    vec = [0.0] * 26
    vec[13] = 1.0  # M00 of the 26-value vector
    result = merge(recipe("weighted_sum", sdxl[:2], alpha=f"blocks({vec})"), tmp_path / "x.safetensors", torch.float32)
    out, b = load(result.path), load(sdxl[1])
    assert torch.equal(
        out["model.diffusion_model.middle_block.1.proj_in.weight"],
        b["model.diffusion_model.middle_block.1.proj_in.weight"].float(),
    )
    assert any("26-value vector mapped to SDXL" in n for n in result.notes)


def test_inpainting_a_with_plain_b_keeps_extra_channels(models, sd1, tmp_path):
    inpaint = models("sd1_inpaint", arch="sd1", seed=5, input_channels=9)
    result = merge(recipe("weighted_sum", [inpaint, sd1[1]], alpha=0.5), tmp_path / "i.safetensors")
    out, a, b = load(result.path), load(inpaint), load(sd1[1])
    k = "model.diffusion_model.input_blocks.0.0.weight"
    assert out[k].shape == a[k].shape == (10, 9, 3, 3)
    assert torch.equal(out[k][:, 4:], a[k][:, 4:])
    assert torch.equal(out[k][:, :4], ((a[k][:, :4].float() + b[k].float()) / 2).half())
    assert json.loads(metadata(result.path)["sd_merge_recipe"])["is_inpainting"] is True
    assert metadata(result.path)["modelspec.architecture"] == "stable-diffusion-v1/inpaint"


def test_plain_a_with_inpainting_b_is_refused(models, sd1, tmp_path):
    inpaint = models("sd1_inpaint", arch="sd1", seed=5, input_channels=9)
    with pytest.raises(ArchMismatchError, match="model A has 4 input channels but model B is an inpainting model"):
        merge(recipe("weighted_sum", [sd1[0], inpaint], alpha=0.5), tmp_path / "i.safetensors")
    assert os.listdir(tmp_path) == []


def test_sd1_with_sdxl_is_refused_before_any_write(sd1, sdxl, tmp_path):
    with pytest.raises(ArchMismatchError, match=r"model A is SD1 \(.*sd1_a.safetensors\), model B is SDXL"):
        merge(recipe("weighted_sum", [sd1[0], sdxl[0]], alpha=0.5), tmp_path / "x.safetensors")
    assert os.listdir(tmp_path) == []


def test_missing_and_b_only_keys(sd1, tmp_path):
    a_full, b_full = load(sd1[0]), load(sd1[1])
    dropped = "model.diffusion_model.out.2.bias"
    vae_key = "first_stage_model.decoder.conv_in.bias"
    a = {k: v for k, v in a_full.items() if k != vae_key}
    b = {k: v for k, v in b_full.items() if k != dropped}
    b["embedding_manager.junk"] = torch.ones(3, dtype=torch.float16)
    save_state_dict(str(tmp_path / "a.safetensors"), a)
    save_state_dict(str(tmp_path / "b.safetensors"), b)
    result = merge(
        recipe("weighted_sum", [tmp_path / "a.safetensors", tmp_path / "b.safetensors"], alpha=0.5),
        tmp_path / "o.safetensors",
    )
    out = load(result.path)
    assert torch.equal(out[dropped], a[dropped])  # missing in B: keeps A
    assert result.plan.kept_missing == {"B": 1}
    assert torch.equal(out[vae_key], b[vae_key])  # a component key only B has is copied
    assert "embedding_manager.junk" not in out and result.plan.dropped_b_only == ["embedding_manager.junk"]


def test_prune_drops_ema_and_schedule_no_prune_keeps_them_unchanged(models, sd1, tmp_path):
    full = models("sd1_ema", arch="sd1", seed=7, ema=True, schedule=True)
    pruned = load(merge(recipe("weighted_sum", [full, sd1[1]], alpha=0.5), tmp_path / "p.safetensors").path)
    assert not any(k.startswith("model_ema.") or k == "betas" for k in pruned)
    assert len(pruned) == 1131
    kept = load(merge(recipe("weighted_sum", [full, sd1[1]], alpha=0.5), tmp_path / "k.safetensors", prune=False).path)
    a = load(full)
    assert set(kept) == set(a)
    for k in ("model_ema.decay", "model_ema.num_updates", "betas", "model_ema.diffusion_modelout2bias"):
        assert kept[k].dtype == a[k].dtype and torch.equal(kept[k], a[k]), k


def test_result_does_not_depend_on_thread_count(sdxl, tmp_path):
    text = recipe("add_difference", sdxl, alpha='blocks("*=0.4 OUT*=0.9")')
    one = merge(text, tmp_path / "one.safetensors", engine=EngineOptions(threads=1)).path
    four = merge(text, tmp_path / "four.safetensors", engine=EngineOptions(threads=4)).path
    a, b = load(one), load(four)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_output_keys_follow_a_file_order_and_bf16(sd1, tmp_path):
    result = merge(recipe("weighted_sum", sd1[:2], alpha=0.5), tmp_path / "o.safetensors", torch.bfloat16)
    out = load(result.path)
    assert out["model.diffusion_model.out.2.weight"].dtype == torch.bfloat16
    from lib_merge.io import SafetensorsFile

    a_order = [k for k in SafetensorsFile(str(sd1[0])).keys()]
    assert SafetensorsFile(result.path).keys() == a_order


def test_cancel_leaves_no_file(sd1, tmp_path):
    token = CancelToken()

    def progress(event):
        if event.phase == "merging" and event.done == 50:
            token.cancel()

    with pytest.raises(Cancelled):
        merge(
            recipe("weighted_sum", sd1[:2], alpha=0.5),
            tmp_path / "c.safetensors",
            engine=EngineOptions(progress=progress, cancel=token),
        )
    assert os.listdir(tmp_path) == []


def test_non_finite_results(sd1, tmp_path):
    a = load(sd1[0])
    a["model.diffusion_model.out.2.bias"] = torch.tensor([1.0, float("inf"), 0, 0], dtype=torch.float16)
    save_state_dict(str(tmp_path / "a.safetensors"), a)
    text = recipe("weighted_sum", [tmp_path / "a.safetensors", sd1[1]], alpha=0.5)
    with pytest.raises(NonFiniteError, match=r"key model.diffusion_model.out.2.bias produced 1 NaN/Inf"):
        merge(text, tmp_path / "o.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors"]
    result = merge(text, tmp_path / "o.safetensors", engine=EngineOptions(nonfinite="keep_a"))
    assert result.report.nonfinite_kept == ["model.diffusion_model.out.2.bias"]


def test_shape_mismatch_names_the_key(sd1, tmp_path):
    b = load(sd1[1])
    b["model.diffusion_model.out.2.bias"] = torch.zeros(5, dtype=torch.float16)
    save_state_dict(str(tmp_path / "b.safetensors"), b)
    with pytest.raises(ShapeMismatchError, match=r"'model.diffusion_model.out.2.bias' has shape \[4\]"):
        merge(recipe("weighted_sum", [sd1[0], tmp_path / "b.safetensors"], alpha=0.5), tmp_path / "o.safetensors")


def test_unknown_architecture_merges_key_by_key(tmp_path):
    for name, v in (("x", 1.0), ("y", 3.0)):
        save_state_dict(
            str(tmp_path / f"{name}.safetensors"),
            {"w": torch.full((3,), v), "n": torch.tensor([1, 2]), "position_ids": torch.ones(2)},
        )
    out = load(
        merge(
            recipe("weighted_sum", [tmp_path / "x.safetensors", tmp_path / "y.safetensors"], alpha=0.25),
            tmp_path / "o.safetensors",
            torch.float32,
        ).path
    )
    assert torch.equal(out["w"], torch.full((3,), 1.5))
    assert torch.equal(out["n"], torch.tensor([1, 2])) and torch.equal(out["position_ids"], torch.ones(2))
    from lib_merge.errors import BlockSchemaError

    with pytest.raises(BlockSchemaError, match="unknown architecture has no blocks"):
        merge(
            recipe("weighted_sum", [tmp_path / "x.safetensors", tmp_path / "y.safetensors"], alpha='blocks("*=1")'),
            tmp_path / "o2.safetensors",
        )


def test_metadata_of_a_saved_merge(sd1, tmp_path):
    result = merge(recipe("weighted_sum", sd1[:2], alpha=0.3), tmp_path / "mix.safetensors")
    meta = metadata(result.path)
    assert meta["alloy_recipe"] == result.recipe_text
    assert meta["alloy_recipe_hash"] == result.recipe_hash
    assert parse_recipe(meta["alloy_recipe"]) is not None
    merge_recipe = json.loads(meta["sd_merge_recipe"])
    from lib_merge.io.hashing import file_sha256

    ha, hb = file_sha256(str(sd1[0])), file_sha256(str(sd1[1]))
    assert merge_recipe["primary_model_hash"] == ha and merge_recipe["secondary_model_hash"] == hb
    assert merge_recipe["tertiary_model_hash"] is None
    assert merge_recipe["interp_method"] == "Weight sum" and merge_recipe["multiplier"] == 0.3
    assert merge_recipe["save_as_half"] is True and merge_recipe["alloy_recipe_hash"] == result.recipe_hash
    lineage = json.loads(meta["sd_merge_models"])
    assert set(lineage) == {ha, hb} and lineage[ha]["name"] == "sd1_a" and len(lineage[ha]["legacy_hash"]) == 8
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert meta["modelspec.title"] == "mix" and meta["modelspec.resolution"] == "512x512"
    assert meta["modelspec.prediction_type"] == "epsilon" and meta["format"] == "pt"
    import hashlib

    with open(result.path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_len)
        assert meta["modelspec.hash_sha256"] == "0x" + hashlib.sha256(f.read()).hexdigest()
    # A merge of merges keeps the lineage of its inputs.
    again = merge(recipe("weighted_sum", [result.path, sd1[2]], alpha=0.5), tmp_path / "mix2.safetensors")
    lineage2 = json.loads(metadata(again.path)["sd_merge_models"])
    assert {ha, hb} <= set(lineage2)
    assert lineage2[file_sha256(result.path)]["sd_merge_recipe"]["type"] == "alloy"


def test_no_metadata_writes_only_format(sd1, tmp_path):
    result = merge(recipe("weighted_sum", sd1[:2], alpha=0.3), tmp_path / "m.safetensors", metadata=False)
    assert metadata(result.path) == {"format": "pt"}


def test_recipe_sha256_is_verified(sd1, tmp_path):
    from lib_merge.errors import ModelHashMismatchError

    text = recipe("weighted_sum", sd1[:2], alpha=0.3).replace(
        f'model("{sd1[1]}")', f'model("{sd1[1]}", sha256="{"ab" * 32}")'
    )
    with pytest.raises(ModelHashMismatchError, match="has sha256 .* but the recipe expects abab"):
        merge(text, tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


def test_synthetic_full_size_shapes_match_the_arch_data():
    shapes = synth_shapes(SynthSpec(arch="sd1", scale=1))
    arch = ARCHITECTURES["sd1"]
    assert all(shapes[k][0] == arch.keys[k][0] for k in shapes)


def test_write_synthetic_is_deterministic(tmp_path):
    p1 = write_synthetic(str(tmp_path / "1.safetensors"), SynthSpec(seed=4))
    p2 = write_synthetic(str(tmp_path / "2.safetensors"), SynthSpec(seed=4))
    assert open(p1, "rb").read() == open(p2, "rb").read()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fast_weighted_sum_is_bit_identical_to_the_fp32_path(models, tmp_path, dtype):
    a_path, b_path = (models(f"lp_{dtype}_{s}", arch="sd1", seed=s, dtype=dtype, std=1.0) for s in (31, 32))
    for alpha in (0.3, 0.7, -0.4, 1.6):
        out = load(
            merge(recipe("weighted_sum", [a_path, b_path], alpha=alpha), tmp_path / f"{alpha}.safetensors", dtype).path
        )
        a, b = load(a_path), load(b_path)
        for k in component_keys("sd1", a):
            assert torch.equal(out[k], a[k].float().lerp(b[k].float(), alpha).to(dtype)), (alpha, k)


def test_overflow_of_the_output_dtype_is_reported(tmp_path):
    paths = [_constant_model(tmp_path / f"{n}.safetensors", v) for n, v in (("a", 6e4), ("b", 3e4), ("c", -3e4))]
    with pytest.raises(NonFiniteError, match="NaN/Inf values"):
        merge(recipe("add_difference", paths, alpha=1.0), tmp_path / "o.safetensors", torch.float16)
    out = load(merge(recipe("add_difference", paths, alpha=1.0), tmp_path / "o.safetensors", torch.float32).path)
    assert float(next(iter(out.values())).reshape(-1)[0]) == 1.2e5


def test_ckpt_input_merges_like_its_safetensors_twin(sd1, tmp_path):
    b = load(sd1[1])
    torch.save({"state_dict": b}, tmp_path / "b.ckpt")
    from_ckpt = load(
        merge(recipe("weighted_sum", [sd1[0], tmp_path / "b.ckpt"], alpha=0.4), tmp_path / "c.safetensors").path
    )
    from_st = load(merge(recipe("weighted_sum", sd1[:2], alpha=0.4), tmp_path / "s.safetensors").path)
    assert all(torch.equal(from_ckpt[k], from_st[k]) for k in from_st)


def test_ckpt_output_holds_the_same_tensors_under_state_dict(sd1, tmp_path):
    text = recipe("add_difference", sd1, alpha=0.6)
    st = load(merge(text, tmp_path / "m.safetensors").path)
    path = merge(text, tmp_path / "m.ckpt", format="ckpt").path
    data = torch.load(path, weights_only=True)
    assert set(data) == {"state_dict"} and list(data["state_dict"]) == list(st)
    assert all(torch.equal(data["state_dict"][k], st[k]) for k in st)
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt", "m.safetensors"]


def test_never_merge_rules():
    f32 = torch.float32
    for key in (
        "betas",
        "model.alphas_cumprod",
        "logvar",
        "model.model_sampling.sigmas",
        "v_pred",
        "conditioner.embedders.1.model.logit_scale",
        "model_ema.decay",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
    ):
        assert not is_mergeable(key, f32), key
    assert not is_mergeable("model.diffusion_model.out.2.bias", torch.int64)
    assert is_mergeable("model.diffusion_model.out.2.bias", torch.bfloat16)
    assert is_mergeable("conditioner.embedders.1.model.text_projection", f32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("method", sorted(THREE))
def test_many_chunks_through_reused_buffers_match_the_reference(method, dtype, sd1, tmp_path, monkeypatch):
    """Keys cut into many chunks with a short last one: each worker's leaf buffers are reused from chunk
    to chunk and key to key, into an fp32 output (computed in place) and an fp16 one."""
    from lib_merge.engine import run as run_module

    monkeypatch.setattr(run_module, "CHUNK_ELEMENTS", 1000)
    params = {"alpha": 0.7} | ({"beta": 0.2} if method != "add_difference" else {})
    out = load(merge(recipe(method, sd1, **params), tmp_path / "o.safetensors", dtype).path)
    a, b, c = (load(p) for p in sd1)
    keys = component_keys("sd1", a)
    assert max(a[k].numel() for k in keys) > 5 * 1000
    for k in keys:
        ref = FORMULAS[method](a[k].double(), b[k].double(), c[k].double(), 0.7, 0.2)
        assert out[k].dtype == dtype
        if dtype == torch.float32:
            assert ((out[k].double() - ref).abs() <= 1e-6 * ref.abs().clamp(min=1)).all(), k
        else:
            assert int((_ordered(out[k]) - _ordered(ref.half())).abs().max()) <= 1, k
