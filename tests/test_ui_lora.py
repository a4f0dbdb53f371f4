"""The LoRA tab (CI runs it on Gradio 3.41.2 and 4.x): its callbacks driven with widget values as
Gradio hands them over, on the WebUI double with a LoRA folder."""

from __future__ import annotations

import gradio as gr
import torch
from helpers import load, metadata, write_lora
from test_lora_file import SD1_MODULES
from test_ui import by_elem_id, handler, last

from lib_merge.engine.live import model_tensors
from lib_merge.ui.app import build_ui


def values_for(inputs, **by_id):
    return [by_id.get(c.elem_id, c.value) for c in inputs]


def test_lora_tab_lines_check_bake_restore_merge_and_extract(webui, tmp_path):
    folder = tmp_path / "Lora"
    folder.mkdir()
    webui.shared.cmd_opts.lora_dir = str(folder)
    a_path = webui.folder / "model_a.safetensors"
    write_lora(folder / "style.safetensors", a_path, SD1_MODULES, rank=2, alpha=1, seed=1)
    write_lora(folder / "other.safetensors", a_path, SD1_MODULES[:2], rank=3, alpha=3, seed=2)
    with gr.Blocks():  # the WebUI's txt2img prompt, built before Alloy's tab
        webui.host.components["txt2img_prompt"] = gr.Textbox(elem_id="txt2img_prompt")
    demo = build_ui(webui.workbench)
    assert by_elem_id(demo, "alloy_lora_pick").choices in (["other", "style"], [("other", "other"), ("style", "style")])

    add, _ = handler(demo, "alloy_lora_add")
    assert add("style", 0.8, "")["value"] == "style:0.8"
    take, inputs = handler(demo, "alloy_lora_from_prompt", webui.host.components.values())
    lines, note = take("", "a cat <lora:style:0.8> <lora:other:-0.5:lbw=OUTD>")
    assert lines["value"] == "style:0.8\nother:-0.5:OUTD" and "2 LoRA tags" in note
    assert "No `<lora:…>` tags" in take("", "a cat")[1]

    check, inputs = handler(demo, "alloy_lora_check")
    report = check("style:0.8\nmissing:1", None)
    assert "**style** × 0.8: lora 4; rank 2; alpha 1" in report and "4 of 4 modules matched in model_a" in report
    assert "**missing:1**: LoRA 'missing' not found" in report

    # Bake into the loaded model: A + 0.8·ΔW; Restore gives A back
    bake, inputs = handler(demo, "alloy_lora_bake")
    status = last(bake(*values_for(inputs, alloy_lora_lines="style:0.8")))
    assert status.startswith("Merged"), status
    a = load(a_path)
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(model_tensors(webui.model)[key], a[key].to(model_tensors(webui.model)[key].dtype))
    assert webui.workbench.restore().startswith("Restored")
    assert torch.equal(model_tensors(webui.model)[key], a[key].to(model_tensors(webui.model)[key].dtype))

    # Merge LoRAs (concat) into the LoRA folder; an existing name is refused, nothing overwritten
    merge, inputs = handler(demo, "alloy_lora_merge")
    raw = values_for(inputs, alloy_lora_lines="style:1\nother:0.5", alloy_lora_merge_name="both")
    assert last(merge(*raw)).startswith("Wrote **both.safetensors**")
    assert metadata(folder / "both.safetensors")["ss_network_dim"] == "5"
    before = (folder / "both.safetensors").read_bytes()
    assert "exists" in last(merge(*raw)) and (folder / "both.safetensors").read_bytes() == before
    bad = last(merge(*values_for(inputs, alloy_lora_lines="style:1", alloy_lora_merge_name="../x")))
    assert bad.startswith("**Error:**") and not (tmp_path / "x.safetensors").exists()

    # Extract A − B at rank 2 into the LoRA folder
    extract, inputs = handler(demo, "alloy_lora_extract")
    raw = values_for(inputs, alloy_lora_extract_a=webui.title("model_a"), alloy_lora_extract_b=webui.title("model_b"),
                     alloy_lora_extract_rank=2, alloy_lora_conv_rank=0, alloy_lora_extract_name="diff")  # fmt: skip
    text = last(extract(*raw))
    assert text.startswith("Wrote **diff.safetensors**"), text
    assert metadata(folder / "diff.safetensors")["ss_network_dim"] == "2"
    missing = last(extract(*values_for(inputs)))
    assert missing == "**Error:** choose both checkpoints, A and B"


def test_lora_merge_and_extract_routes_check_their_fields(webui, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_merge.surfaces.http import add_routes

    folder = tmp_path / "Lora"
    folder.mkdir()
    webui.shared.cmd_opts.lora_dir = str(folder)
    write_lora(folder / "style.safetensors", webui.folder / "model_a.safetensors", SD1_MODULES, rank=2, alpha=1)
    app = FastAPI()
    add_routes(app, webui.workbench)
    client = TestClient(app)
    answer = client.post("/alloy/v1/lora/merge", json={"loras": ["style:1", "style:-0.5"], "name": "twice"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == str(folder / "twice.safetensors")
    assert metadata(folder / "twice.safetensors")["ss_network_dim"] == "4"
    for body in ({"loras": "style"}, {"loras": ["style"], "rank": "8"}, {"loras": ["style"], "colour": 1}, [1]):
        bad = client.post("/alloy/v1/lora/merge", json=body)
        assert bad.status_code == 400 and bad.json()["error"], body
    answer = client.post("/alloy/v1/lora/extract", json={"a": webui.title("model_a"), "b": webui.title("model_b"),
                                                          "rank": 2, "conv_rank": 0, "name": "ab"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert load(folder / "ab.safetensors")
    outside = client.post("/alloy/v1/lora/extract", json={"a": "/etc/passwd", "b": webui.title("model_b")})
    assert outside.status_code in (400, 404) and "passwd" in outside.json()["error"]
