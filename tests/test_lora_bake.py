"""lora(x, "file", strength=…) in recipes: the LoRA's ΔW baked into the merge, key by key."""

from __future__ import annotations

import pytest
import torch
from helpers import load, write_lora
from test_lora_file import SD1_MODULES

from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.recipe import parse_recipe


def recipe(body: str, *models) -> str:
    lines = ["alloy-recipe 1"] + [f'{n} = model("{p}")' for n, p in zip("AB", models, strict=False)]
    return "\n".join(lines + [f"merged = {body}"]) + "\n"


def reference_delta(lora: dict, name: str, shape) -> torch.Tensor:
    """s · up·down of one kohya module, as the formula says (3×3 convs reshaped)."""
    up = lora[f"{name}.lora_up.weight"].double()
    down = lora[f"{name}.lora_down.weight"].double()
    alpha = float(lora[f"{name}.alpha"]) if f"{name}.alpha" in lora else up.shape[1]
    return (alpha / down.shape[0]) * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(shape)


def test_bake_adds_strength_times_delta_on_the_targets_only(sd1, tmp_path):
    path = tmp_path / "style.safetensors"
    targets = write_lora(path, sd1[0], SD1_MODULES, rank=2, alpha=1)
    text = recipe(f'lora(A, "{path}", strength=0.8)', sd1[0])
    out = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "baked.safetensors"), torch.float32))
    a, lora, baked = load(sd1[0]), load(path), load(out.path)
    changed = set(targets.values())
    for name, key in targets.items():
        expected = a[key].double() + 0.8 * reference_delta(lora, name, a[key].shape)
        torch.testing.assert_close(baked[key].double(), expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(baked[k], a[k].float()) for k in a if k not in changed and a[k].is_floating_point())
    assert f'lora(A, "{path}", strength=0.8)' in out.recipe_text


def test_a_lora_under_a_merge_and_its_content_in_the_hash(sd1, tmp_path):
    path = tmp_path / "style.safetensors"
    targets = write_lora(path, sd1[0], SD1_MODULES, rank=2)
    text = recipe(f'weighted_sum(A, lora(B, "{path}", strength=1.0), alpha=0.5)', sd1[0], sd1[1])
    out = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "m.safetensors"), torch.float32))
    a, b, lora, merged = load(sd1[0]), load(sd1[1]), load(path), load(out.path)
    key = targets[SD1_MODULES[0]]
    expected = 0.5 * a[key].double() + 0.5 * (b[key].double() + reference_delta(lora, SD1_MODULES[0], a[key].shape))
    torch.testing.assert_close(merged[key].double(), expected, rtol=1e-5, atol=1e-6)
    write_lora(path, sd1[0], SD1_MODULES, rank=2, seed=1)  # same name, other weights: another merge
    again = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "m2.safetensors"), torch.float32))
    assert again.recipe_hash != out.recipe_hash and again.recipe_text == out.recipe_text


def test_cli_bake_with_strengths_and_lora_block_weights(sd1, sdxl, tmp_path, monkeypatch):
    from test_cli import cli, error_line
    from test_lora_file import SDXL_MODULES

    from lib_merge.app.history import history_file, read_history

    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    targets = write_lora(first, sd1[0], SD1_MODULES, rank=2, alpha=1)
    write_lora(second, sd1[0], SD1_MODULES, rank=3, seed=5)
    out = tmp_path / "baked.safetensors"
    proc = cli("lora", "bake", "--model", sd1[0], "--lora", f"{first}:0.8", "--lora", f"{second}:0.5:INS",
               "--dtype", "fp32", "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == str(out) and len(proc.stdout.splitlines()[-2]) == 64
    a, l1, l2, baked = load(sd1[0]), load(first), load(second), load(out)
    ins = {  # the INS preset: BASE, IN01, IN02, IN04 at 1, every other block 0
        SD1_MODULES[0]: 1.0,  # input_blocks.1 = IN01
        SD1_MODULES[1]: 0.0,  # middle_block = M00
        SD1_MODULES[2]: 0.0,  # output_blocks.3 = OUT03
        SD1_MODULES[3]: 1.0,  # text encoder = BASE
    }
    for name, key in targets.items():
        shape = a[key].shape
        expected = a[key].double() + 0.8 * reference_delta(l1, name, shape)
        expected += 0.5 * ins[name] * reference_delta(l2, name, shape)
        torch.testing.assert_close(baked[key].double(), expected, rtol=1e-5, atol=1e-6)
    (row,) = read_history(history_file()).rows
    assert row.settings["loras"] == [f"{first}:0.8", f"{second}:0.5:INS"] and row.output == str(out)

    xl = tmp_path / "xl.safetensors"
    write_lora(xl, sdxl[0], SDXL_MODULES)
    refused = cli("lora", "bake", "--model", sd1[0], "--lora", f"{xl}:1", "-o", tmp_path / "no.safetensors")
    assert refused.returncode == 4 and "it looks made for SDXL" in error_line(refused)
    assert not (tmp_path / "no.safetensors").exists()
    bad_blocks = cli("lora", "bake", "--model", sd1[0], "--lora", f"{first}:1:1,0,1", "-o", tmp_path / "n.safetensors")
    assert bad_blocks.returncode == 3 and "take 17 or 26 values, not 3" in error_line(bad_blocks)


def test_block_vectors_of_lora_tools():
    from lib_merge.arch.blocks import SCHEMAS
    from lib_merge.lora.blocks import SD1_LORA_SLOTS, lora_block_vector

    ins = dict(zip(SCHEMAS["sd1"].slots, lora_block_vector("INS", "sd1"), strict=True))
    assert {slot for slot, v in ins.items() if v} == {"BASE", "IN01", "IN02", "IN04"}
    seventeen = lora_block_vector(",".join(str(i) for i in range(1, 18)), "sd1")
    placed = dict(zip(SCHEMAS["sd1"].slots, seventeen, strict=True))
    assert [placed[s] for s in SD1_LORA_SLOTS] == list(range(1, 18)) and placed["IN00"] == placed["IN03"] == 0
    xl = dict(zip(SCHEMAS["sdxl"].slots, lora_block_vector("OUTS", "sdxl"), strict=True))
    # SD1 OUT03…OUT08 stand for SDXL OUT00…OUT05: OUTS (SD1 OUT07…OUT11) is SDXL OUT04, OUT05
    assert {slot for slot, v in xl.items() if v} == {"BASE", "OUT04", "OUT05"}


def test_bake_into_the_loaded_model_restores_and_stacks_on_a_live_merge(webui, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_merge.app.requests import LoraBakeRequest, MergeRequest
    from lib_merge.engine.live import model_tensors
    from lib_merge.recipe.form import MergeSettings
    from lib_merge.surfaces.http import add_routes

    folder = tmp_path / "Lora"
    folder.mkdir()
    webui.shared.cmd_opts.lora_dir = str(folder)
    a_path = webui.folder / "model_a.safetensors"
    targets = write_lora(folder / "style.safetensors", a_path, SD1_MODULES, rank=2, alpha=1)
    a, lora = load(a_path), load(folder / "style.safetensors")
    outcome = webui.workbench.bake_loras(LoraBakeRequest(["style:0.8"]))
    live = model_tensors(webui.model)
    for name, key in targets.items():
        expected = (a[key].double() + 0.8 * reference_delta(lora, name, a[key].shape)).to(live[key].dtype)
        assert torch.equal(live[key], expected), key
    assert 'lora(A, "' in outcome.recipe_text and "style.safetensors" in outcome.recipe_text
    assert webui.workbench.restore().startswith("Restored")
    assert all(torch.equal(model_tensors(webui.model)[k], t.to(live[k].dtype)) for k, t in a.items())

    settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), alpha=0.5)
    merged = webui.workbench.merge(MergeRequest(settings))
    app = FastAPI()
    add_routes(app, webui.workbench)
    client = TestClient(app)
    answer = client.post("/alloy/v1/lora/bake", json={"loras": ["style:1"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["hash"] != merged.recipe_hash
    assert "on top of the loaded merge" in answer.json()["message"]
    text = webui.workbench.live.recipe_text
    assert "weighted_sum(A, B, alpha=0.5)" in text and "lora(m1," in text  # the LoRA on top of the live merge
    bad = client.post("/alloy/v1/lora/bake", json={"loras": ["missing:1"]})
    assert bad.status_code == 400 and bad.json()["error"].startswith("LoRA 'missing' not found in")
    assert client.post("/alloy/v1/lora/bake", json={"loras": "style"}).status_code == 400


def test_lora_lines_and_prompt_tags():
    from lib_merge.app.lora import loras_in_prompt, parse_lora_spec

    assert parse_lora_spec("style") == ("style", 1.0, None)
    assert parse_lora_spec("style:0.8") == ("style", 0.8, None)
    assert parse_lora_spec("style:0.5:INS") == ("style", 0.5, "INS")
    assert parse_lora_spec(r"C:\loras\style.safetensors:0.7") == (r"C:\loras\style.safetensors", 0.7, None)
    assert parse_lora_spec("a:b:c") == ("a:b:c", 1.0, None)  # no number after a colon: all of it is the name
    prompt = "a cat <lora:style:0.8>, <lora:detail>, <lora:blocks:1:lbw=INS> <hypernet:x:1>"
    assert loras_in_prompt(prompt) == ["style:0.8", "detail:1", "blocks:1:INS"]


def test_a_request_names_no_lora_outside_the_lora_folder(webui, tmp_path):
    """A recipe sent to the Workbench may only bake LoRAs of the host's LoRA folder; outside it, the error
    is the same whether the file exists or not."""
    from lib_merge.app.requests import MergeRequest
    from lib_merge.errors import ModelNotFoundError

    folder = tmp_path / "Lora"
    folder.mkdir()
    webui.shared.cmd_opts.lora_dir = str(folder)
    outside = tmp_path / "outside.safetensors"
    write_lora(outside, webui.folder / "model_a.safetensors", SD1_MODULES)
    for path in (outside, tmp_path / "missing.safetensors", "../outside.safetensors"):
        text = f'alloy-recipe 1\nA = model("model_a.safetensors")\nmerged = lora(A, "{path}", strength=1.0)\n'
        with pytest.raises(ModelNotFoundError, match=f"not found in {folder}"):
            webui.workbench.merge(MergeRequest(recipe=text))
    assert webui.workbench.live is None


def test_an_sd_lora_on_an_inpainting_model_changes_the_latent_channels_of_conv_in(models, sd1, tmp_path):
    inpainting = models("sd1_inpaint", arch="sd1", seed=1, input_channels=9)
    path = tmp_path / "conv_in.safetensors"
    write_lora(path, sd1[0], ["lora_unet_conv_in", SD1_MODULES[0]], rank=2, alpha=2)
    text = recipe(f'lora(A, "{path}", strength=0.5)', inpainting)
    out = merge_to_file(parse_recipe(text), SaveOptions(str(tmp_path / "baked.safetensors"), torch.float32))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    a, lora, baked = load(inpainting), load(path), load(out.path)
    assert a[key].shape[1] == 9
    expected = a[key].double()
    expected[:, :4] += 0.5 * reference_delta(lora, "lora_unet_conv_in", expected[:, :4].shape)
    torch.testing.assert_close(baked[key].double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(baked[key][:, 4:], a[key][:, 4:].float())  # the mask and masked-image channels stay


def test_user_and_imported_lora_block_presets(tmp_path, monkeypatch):
    from lib_merge.arch.blocks import SCHEMAS
    from lib_merge.lora.blocks import load_lora_presets, lora_block_vector

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ALLOY_HOME", str(home))
    lbw = tmp_path / "lbwpresets.txt"  # the LoRA Block Weight extension's file: NAME:values, some not numbers
    lbw.write_text("MINE:1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0\nRAND:R,R,R\nXL:0,0,0,0,0,0,1,1,1,1,1,1\n", "utf-8")
    (home / "lbw_presets.tsv").write_text("preset_name\tpreset_weights\nMINE\t" + ",".join(["0.5"] * 17) + "\n")
    presets = load_lora_presets([lbw])
    assert "RAND" not in presets and presets["INS"][0] == 1  # built-ins stay; a bad line is skipped
    mine = dict(zip(SCHEMAS["sd1"].slots, lora_block_vector("MINE", "sd1", presets), strict=True))
    assert mine["IN01"] == 0.5 and mine["IN00"] == 0  # the user's file wins over the imported one
    xl = dict(zip(SCHEMAS["sdxl"].slots, lora_block_vector("XL", "sdxl", presets), strict=True))
    assert {slot for slot, v in xl.items() if v} == {f"OUT0{i}" for i in range(6)}
    with pytest.raises(Exception, match="not a preset"):
        lora_block_vector("MISSING", "sd1", presets)


def test_the_webui_host_imports_the_lora_block_weight_presets(webui, tmp_path, monkeypatch):
    from modules import paths

    scripts = tmp_path / "extensions" / "sd-webui-lora-block-weight" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "lbwpresets.txt").write_text("HALF:" + ",".join(["0.5"] * 17) + "\n", "utf-8")
    (tmp_path / "extensions" / "sd-webui-supermerger").mkdir()
    monkeypatch.setattr(paths, "script_path", str(tmp_path))
    assert webui.host.lora_preset_files() == [str(scripts / "lbwpresets.txt")]
    assert webui.host.supermerger_folders() == [str(tmp_path / "extensions" / "sd-webui-supermerger")]
    folder = tmp_path / "Lora"
    folder.mkdir()
    webui.shared.cmd_opts.lora_dir = str(folder)
    write_lora(folder / "style.safetensors", webui.folder / "model_a.safetensors", SD1_MODULES, rank=2, alpha=1)
    from lib_merge.app.requests import LoraBakeRequest

    outcome = webui.workbench.bake_loras(LoraBakeRequest(["style:1:HALF"]))
    assert "blocks(" in outcome.recipe_text and "0.5" in outcome.recipe_text
    assert webui.workbench.restore().startswith("Restored")
