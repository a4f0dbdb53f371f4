"""Flux LoRAs baked into a Flux checkpoint: kohya fused and split q/k/v, diffusers/PEFT with and without
alpha, the text encoders (CLIP-L, T5), against float64 references that place each part's rows by hand."""

from __future__ import annotations

import pytest
import torch
from helpers import load
from safetensors.torch import save_file
from test_cli import cli, error_line

from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.recipe import parse_recipe

U = "model.diffusion_model."
CLIP = "text_encoders.clip_l.transformer.text_model.encoder.layers."
T5 = "text_encoders.t5xxl.transformer.encoder.block."
G = torch.Generator().manual_seed(7)


@pytest.fixture(scope="module")
def flux(models):
    return models("flux_a", arch="flux", seed=51)


class Lora:
    """A LoRA file being written, and the float64 ΔW per checkpoint key it should bake to (strength 1)."""

    def __init__(self, base: dict[str, torch.Tensor]):
        self.base, self.tensors, self.delta = base, {}, {}

    def pair(self, rows: int, cols: int, rank: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(rank, cols, generator=G) * 0.1, torch.randn(rows, rank, generator=G) * 0.1

    def add(self, key: str, delta: torch.Tensor, rows: tuple[int, int] | None = None) -> None:
        whole = self.delta.setdefault(key, torch.zeros(self.base[key].shape, dtype=torch.float64))
        if rows is None:
            whole += delta
        else:
            whole[rows[0] : rows[1]] += delta

    def module(self, name: str, key: str, rows=None, *, down="lora_down", up="lora_up", alpha=None, swap=False):
        """One LoRA module on `key` (or its `rows`): up·down · alpha/rank into the reference."""
        shape = self.base[key].shape
        n = rows[1] - rows[0] if rows else shape[0]
        d, u = self.pair(n, shape[1])
        self.tensors[f"{name}.{down}.weight"], self.tensors[f"{name}.{up}.weight"] = d, u
        scale = 1.0
        if alpha is not None:
            self.tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
            scale = alpha / d.shape[0] if alpha else 1.0
        delta = scale * (u.double() @ d.double())
        if swap:  # diffusers' (scale, shift) → the checkpoint's (shift, scale)
            delta = torch.cat((delta[n // 2 :], delta[: n // 2]))
        self.add(key, delta, rows)

    def save(self, path) -> str:
        save_file(self.tensors, str(path))
        return str(path)


def widths(base) -> tuple[int, int]:
    """Hidden width h (linear1's input width) and the MLP rows of linear1 after q, k, v."""
    h = base[U + "single_blocks.0.linear1.weight"].shape[1]
    return h, base[U + "single_blocks.0.linear1.weight"].shape[0] - 3 * h


def kohya_fused(base) -> Lora:
    lora = Lora(base)
    lora.module("lora_unet_double_blocks_0_img_attn_qkv", U + "double_blocks.0.img_attn.qkv.weight", alpha=4)
    lora.module("lora_unet_single_blocks_1_linear1", U + "single_blocks.1.linear1.weight", alpha=1)
    lora.module("lora_unet_double_blocks_2_txt_mlp_0", U + "double_blocks.2.txt_mlp.0.weight", alpha=1)
    lora.module("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", CLIP + "0.self_attn.q_proj.weight", alpha=1)
    lora.module("lora_te3_encoder_block_1_layer_1_DenseReluDense_wi_0", T5 + "1.layer.1.DenseReluDense.wi_0.weight",
                alpha=2)  # fmt: skip
    return lora


def kohya_split(base) -> Lora:
    """sd-scripts' split_qkv: lora_down.<i>/lora_up.<i> per part, one alpha for the module."""
    lora = Lora(base)
    h, mlp = widths(base)
    for name, key, sizes in (
        ("lora_unet_double_blocks_1_txt_attn_qkv", U + "double_blocks.1.txt_attn.qkv.weight", (h, h, h)),
        ("lora_unet_single_blocks_0_linear1", U + "single_blocks.0.linear1.weight", (h, h, h, mlp)),
    ):
        lora.tensors[f"{name}.alpha"] = torch.tensor(8.0)
        start = 0
        for i, size in enumerate(sizes):
            d, u = lora.pair(size, h, rank=4)
            lora.tensors[f"{name}.lora_down.{i}.weight"], lora.tensors[f"{name}.lora_up.{i}.weight"] = d, u
            lora.add(key, 2.0 * (u.double() @ d.double()), (start, start + size))  # alpha 8 / rank 4
            start += size
    return lora


def peft(base, alpha: float | None = None, prefix: str = "transformer.") -> Lora:
    """ai-toolkit / diffusers names: q, k, v as rows of the fused weights, embedders, norm_out swapped."""
    lora = Lora(base)
    h, mlp = widths(base)
    kw = {"down": "lora_A", "up": "lora_B", "alpha": alpha}
    img, txt = U + "double_blocks.0.img_attn.qkv.weight", U + "double_blocks.0.txt_attn.qkv.weight"
    for i, part in enumerate(("to_q", "to_k", "to_v")):
        lora.module(f"{prefix}transformer_blocks.0.attn.{part}", img, (i * h, (i + 1) * h), **kw)
    lora.module(f"{prefix}transformer_blocks.0.attn.add_v_proj", txt, (2 * h, 3 * h), **kw)
    lora.module(f"{prefix}transformer_blocks.0.attn.to_add_out", U + "double_blocks.0.txt_attn.proj.weight", **kw)
    lora.module(f"{prefix}transformer_blocks.0.norm1_context.linear", U + "double_blocks.0.txt_mod.lin.weight", **kw)
    linear1 = U + "single_blocks.2.linear1.weight"
    lora.module(f"{prefix}single_transformer_blocks.2.attn.to_k", linear1, (h, 2 * h), **kw)
    lora.module(f"{prefix}single_transformer_blocks.2.proj_mlp", linear1, (3 * h, 3 * h + mlp), **kw)
    lora.module(f"{prefix}single_transformer_blocks.2.proj_out", U + "single_blocks.2.linear2.weight", **kw)
    lora.module(f"{prefix}x_embedder", U + "img_in.weight", **kw)
    lora.module(f"{prefix}time_text_embed.guidance_embedder.linear_1", U + "guidance_in.in_layer.weight", **kw)
    lora.module(f"{prefix}proj_out", U + "final_layer.linear.weight", **kw)
    lora.module(f"{prefix}norm_out.linear", U + "final_layer.adaLN_modulation.1.weight", swap=True, **kw)
    return lora


def expected(base: dict, *weighted: tuple[Lora, float]) -> dict[str, torch.Tensor]:
    out = {}
    for lora, strength in weighted:
        for key, delta in lora.delta.items():
            out[key] = out.get(key, base[key].double()) + strength * delta
    return out


def assert_baked(baked: dict, base: dict, want: dict) -> None:
    for key, value in want.items():
        torch.testing.assert_close(baked[key].double(), value, rtol=1e-5, atol=1e-6, msg=key)
    same = [k for k in base if k not in want and k in baked and base[k].is_floating_point()]
    assert all(torch.equal(baked[k], base[k].float()) for k in same)


def test_cli_bakes_kohya_fused_split_and_peft_flux_loras(flux, tmp_path):
    base = load(flux)
    fused, split, diffusers = kohya_fused(base), kohya_split(base), peft(base)
    files = [lora.save(tmp_path / f"{n}.safetensors") for n, lora in (("f", fused), ("s", split), ("p", diffusers))]
    out = tmp_path / "baked.safetensors"
    proc = cli("lora", "bake", "--model", flux, "--lora", f"{files[0]}:0.7", "--lora", f"{files[1]}:0.5",
               "--lora", files[2], "--dtype", "fp32", "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_baked(load(out), base, expected(base, (fused, 0.7), (split, 0.5), (diffusers, 1.0)))


def test_recipe_bakes_peft_with_alpha_and_text_encoders_and_old_diffusers_names(flux, tmp_path):
    base = load(flux)
    lora = peft(base, alpha=1.0, prefix="base_model.model.")  # alpha 1, rank 2: half the change
    lora.module("text_encoder.text_model.encoder.layers.1.self_attn.k_proj", CLIP + "1.self_attn.k_proj.weight",
                down="lora_A", up="lora_B")  # fmt: skip
    lora.module("text_encoder_2.encoder.block.0.layer.0.SelfAttention.o", T5 + "0.layer.0.SelfAttention.o.weight",
                down="lora.down", up="lora.up")  # fmt: skip
    lora.module("transformer.transformer_blocks.3.ff.net.2", U + "double_blocks.3.img_mlp.2.weight",
                down="lora.down", up="lora.up", alpha=4)  # fmt: skip
    path = lora.save(tmp_path / "peft.safetensors")
    text = f'alloy-recipe 1\nA = model("{flux}")\nmerged = lora(A, "{path}", strength=0.5)\n'
    out = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "r.safetensors"), torch.float32))
    assert_baked(load(out.path), base, expected(base, (lora, 0.5)))


def test_zero_alpha_is_rank_and_an_all_zero_lora_is_refused(flux, tmp_path):
    base = load(flux)
    lora = Lora(base)
    lora.module("lora_unet_double_blocks_4_img_mod_lin", U + "double_blocks.4.img_mod.lin.weight", alpha=0)
    lora.module("lora_unet_single_blocks_3_linear2", U + "single_blocks.3.linear2.weight", alpha=0)
    path = lora.save(tmp_path / "zero_alpha.safetensors")
    text = f'alloy-recipe 1\nA = model("{flux}")\nmerged = lora(A, "{path}", strength=1.0)\n'
    out = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "z.safetensors"), torch.float32))
    assert_baked(load(out.path), base, expected(base, (lora, 1.0)))  # kohya: alpha 0 means alpha = rank

    untrained = {k: (torch.zeros_like(v) if ".lora_up." in k else v) for k, v in lora.tensors.items()}
    save_file(untrained, str(tmp_path / "untrained.safetensors"))
    proc = cli(
        "lora", "bake", "--model", flux, "--lora", tmp_path / "untrained.safetensors", "-o", tmp_path / "u.safetensors"
    )
    line = error_line(proc)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and not (tmp_path / "u.safetensors").exists()
    assert "untrained.safetensors" in line and "would change nothing" in line


def test_loras_of_nothing_and_of_other_architectures_are_refused_naming_both(flux, models, tmp_path):
    junk = {"lora_unet_nowhere_0_attn.lora_down.weight": torch.ones(2, 8),
            "lora_unet_nowhere_0_attn.lora_up.weight": torch.ones(8, 2)}  # fmt: skip
    save_file(junk, str(tmp_path / "junk.safetensors"))
    proc = cli(
        "lora", "bake", "--model", flux, "--lora", tmp_path / "junk.safetensors", "-o", tmp_path / "j.safetensors"
    )
    line = error_line(proc)
    assert proc.returncode == 4 and "junk.safetensors: 1 of 1 modules have no place in flux_a" in line

    xl = {  # SDXL names (kohya): text encoder 1 and 2 and an input block
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(2, 768),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.ones(3072, 2),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.ones(2, 640),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.ones(640, 2),
    }
    save_file(xl, str(tmp_path / "xl.safetensors"))
    proc = cli("lora", "bake", "--model", flux, "--lora", tmp_path / "xl.safetensors", "-o", tmp_path / "x.safetensors")
    assert proc.returncode == 4 and "it looks made for SDXL, not Flux" in error_line(proc)

    sd1 = models("sd1_a", arch="sd1", seed=1)
    path = kohya_split(load(flux)).save(tmp_path / "flux_lora.safetensors")
    proc = cli("lora", "bake", "--model", sd1, "--lora", path, "-o", tmp_path / "s.safetensors")
    assert proc.returncode == 4 and "it looks made for Flux, not SD1" in error_line(proc)
    assert not any((tmp_path / n).exists() for n in ("j.safetensors", "x.safetensors", "s.safetensors"))


def test_flux_lora_block_weights_use_the_flux_slots(flux, tmp_path):
    base = load(flux)
    fused = kohya_fused(base)
    path = fused.save(tmp_path / "f.safetensors")
    out = tmp_path / "blocks.safetensors"
    proc = cli("lora", "bake", "--model", flux, "--lora", f"{path}:0.8:D*=0,T5=0.5", "--dtype", "fp32", "-o", out)
    assert proc.returncode == 0, proc.stderr
    factor = {"double_blocks": 0.0, "t5xxl": 0.5}  # every other slot (S01, CLIP) keeps the strength
    want = {}
    for key, delta in fused.delta.items():
        f = next((v for part, v in factor.items() if part in key), 1.0)
        want[key] = base[key].double() + 0.8 * f * delta
    assert_baked(load(out), base, want)
    bad = cli("lora", "bake", "--model", flux, "--lora", f"{path}:1:X*=0", "-o", tmp_path / "b.safetensors")
    assert bad.returncode == 3 and "is no block of Flux" in error_line(bad)


def test_inspect_tells_flux_and_its_zero_modules(flux, tmp_path):
    from lib_merge.lora.inspect import inspect_lora

    base = load(flux)
    shapes = {k: tuple(v.shape) for k, v in base.items()}
    report = inspect_lora(peft(base).save(tmp_path / "p.safetensors"), shapes, "flux_a")
    assert report.base == "flux" and report.matched == report.modules == 13 and not report.zero
    split = kohya_split(base)
    split.tensors["lora_unet_single_blocks_0_linear1.lora_up.3.weight"].zero_()
    report = inspect_lora(split.save(tmp_path / "s.safetensors"), shapes, "flux_a")
    assert report.base == "flux" and report.matched == 7 and report.zero == ["lora_unet_single_blocks_0_linear1.3"]
    assert any(line.startswith("no effect (1 all-zero modules)") for line in report.lines())


def test_merged_flux_loras_bake_like_their_inputs_and_name_fused_parts_as_loaders_read_them(flux, tmp_path):
    from lib_merge.lora.merge import LoraInput, LoraMergeSettings, merge_loras
    from lib_merge.lora.write import write_lora

    base = load(flux)
    split, diffusers = kohya_split(base), peft(base, alpha=4.0)
    inputs = [
        LoraInput(split.save(tmp_path / "s.safetensors"), 0.5),
        LoraInput(diffusers.save(tmp_path / "p.safetensors")),
    ]
    build = merge_loras(LoraMergeSettings(inputs, "concat", model=str(flux)))
    written = write_lora(build, str(tmp_path / "merged.safetensors"), torch.float32, False)
    names = {k.rsplit(".", 2)[0] for k in load(written.path) if k.endswith(".lora_up.weight")}
    assert "transformer.single_transformer_blocks.0.proj_mlp" in names  # kohya's split part 3 of linear1
    assert "transformer.transformer_blocks.1.attn.add_k_proj" in names  # part 1 of the text stream's qkv
    assert "transformer.norm_out.linear" in names and not any(n[-1].isdigit() and n[-2] == "." for n in names)
    text = f'alloy-recipe 1\nA = model("{flux}")\nmerged = lora(A, "{written.path}", strength=1.0)\n'
    out = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "m.safetensors"), torch.float32))
    assert_baked(load(out.path), base, expected(base, (split, 0.5), (diffusers, 1.0)))
