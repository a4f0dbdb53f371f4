"""Reading LoRA files, telling their base, matching them to a checkpoint, and `lora inspect`."""

from __future__ import annotations

import pytest
from helpers import write_lora
from safetensors.torch import save_file
from test_cli import cli, error_line

from lib_merge.errors import CorruptModelError, LoraFormatError, LoraMismatchError
from lib_merge.io.source import SourceModel
from lib_merge.lora.file import LoraFile, match
from lib_merge.lora.inspect import inspect_lora

SD1_MODULES = [
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
    "lora_unet_up_blocks_1_resnets_0_conv1",  # a 3×3 conv: LoCon
    "lora_te_text_model_encoder_layers_0_mlp_fc1",
]
SDXL_MODULES = [
    "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k",
    "lora_te1_text_model_encoder_layers_0_mlp_fc1",
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
]


def shapes_of(path) -> dict:
    source = SourceModel(str(path))
    try:
        return source.shapes
    finally:
        source.close()


def test_a_kohya_lora_reads_matches_and_reports(sd1, tmp_path):
    path = tmp_path / "style.safetensors"
    targets = write_lora(path, sd1[0], SD1_MODULES, rank=2, alpha=1)
    lora = LoraFile.read(str(path))
    assert set(lora.modules) == set(SD1_MODULES) and lora.likely_base() == "sd1"
    assert lora.kinds() == {"lora": 4}
    found = match(lora, shapes_of(sd1[0]), "sd1_a")
    assert {name: t.key for name, t in found.targets.items()} == targets and not found.unmatched
    report = inspect_lora(str(path), shapes_of(sd1[0]), "sd1_a")
    assert report.ranks == {2: 4} and report.alphas == {"1": 4} and report.matched == 4 and report.base == "sd1"
    assert "matched in sd1_a: 4 of 4" in report.lines()


def test_an_sdxl_lora_on_sd1_is_refused_naming_its_base(sd1, sdxl, tmp_path):
    path = tmp_path / "xl.safetensors"
    write_lora(path, sdxl[0], SDXL_MODULES)
    lora = LoraFile.read(str(path))
    assert lora.likely_base() == "sdxl"
    assert not match(lora, shapes_of(sdxl[0]), "sdxl_a").unmatched  # OpenCLIP q lands on its in_proj rows
    with pytest.raises(
        LoraMismatchError, match=r"xl.safetensors: 3 of 3 modules have no place in sd1_a; it looks made for SDXL"
    ):
        match(lora, shapes_of(sd1[0]), "sd1_a")
    loose = match(lora, shapes_of(sd1[0]), "sd1_a", strict=False)
    assert len(loose.unmatched) == 3 and "3 not found in the checkpoint" in loose.summary()


def test_damaged_and_foreign_files_are_refused_by_name(sd1, tmp_path):
    path = tmp_path / "style.safetensors"
    write_lora(path, sd1[0], SD1_MODULES)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptModelError, match="cut.safetensors"):
        LoraFile.read(str(cut))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"model.diffusion_model.out.2.weight": __import__("torch").ones(2)}, str(foreign))
    with pytest.raises(LoraFormatError, match="foreign.safetensors: 1 keys are no LoRA part: model.diffusion_model"):
        LoraFile.read(str(foreign))
    odd = tmp_path / "odd.safetensors"
    save_file({"x.hada_t1": __import__("torch").ones(2)}, str(odd))
    with pytest.raises(LoraFormatError, match="odd.safetensors: module 'x' has no known LoRA parts"):
        LoraFile.read(str(odd))


def test_cli_lora_inspect(sd1, tmp_path):
    path = tmp_path / "style.safetensors"
    write_lora(path, sd1[0], SD1_MODULES, rank=2, alpha=1)
    shown = cli("lora", "inspect", path)
    assert shown.returncode == 0, shown.stderr
    assert "modules: 4 (lora 4)" in shown.stdout and "rank: 2 ×4" in shown.stdout and "base: SD1" in shown.stdout
    against = cli("lora", "inspect", path, "--model", sd1[0], "--json")
    assert against.returncode == 0 and '"matched": 4' in against.stdout
    bad = cli("lora", "inspect", tmp_path / "missing.safetensors")
    assert bad.returncode == 4 and "missing.safetensors" in error_line(bad)
