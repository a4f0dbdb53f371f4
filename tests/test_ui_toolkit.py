"""The Toolkit and Analysis tabs (CI runs them on Gradio 3.41.2 and 4.x), driven with widget values."""

from __future__ import annotations

import shutil

from helpers import load, table_rows
from PIL import Image, PngImagePlugin
from test_ui import handler, last
from test_ui_lora import values_for

from lib_merge.app.workbench import Workbench
from lib_merge.host.folder import FolderHost
from lib_merge.ui.app import build_ui


def test_toolkit_tab_inspects_prunes_and_refuses_what_it_must(tmp_path, sd1):
    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    inspect, inputs = handler(demo, "alloy_tk_inspect")
    status, report = last(inspect(*values_for(inputs, alloy_tk_model=sd1[0].name)))
    assert status == "Inspect: done." and "architecture: SD1 (sd1)" in report and "position_ids" in report
    prune, inputs = handler(demo, "alloy_tk_prune")
    status, report = last(prune(*values_for(inputs, alloy_tk_model=sd1[0].name, alloy_tk_name="small")))
    assert report.startswith(f"Wrote {tmp_path / 'small.safetensors'}"), report
    assert set(load(tmp_path / "small.safetensors")) == set(load(sd1[0]))
    again = last(prune(*values_for(inputs, alloy_tk_model=sd1[0].name, alloy_tk_name="small")))[0]
    assert again.startswith("**Error:**") and "exists" in again
    replace, inputs = handler(demo, "alloy_tk_replace")
    status, report = last(replace(*values_for(inputs, alloy_tk_model=sd1[0].name, alloy_tk_donor=sd1[1].name,
                                              alloy_tk_component="vae", alloy_tk_name="a_vae_b")))  # fmt: skip
    assert "the vae of" in report, status
    (tmp_path / "VAE").mkdir()
    extract, inputs = handler(demo, "alloy_tk_extract")
    status, report = last(extract(*values_for(inputs, alloy_tk_model=sd1[0].name, alloy_tk_component="vae")))
    vae = tmp_path / "VAE" / f"{sd1[0].stem}.vae.safetensors"
    assert report.startswith(f"Wrote {vae}") and set(load(vae)) == {
        k[len("first_stage_model.") :] for k in load(sd1[0]) if k.startswith("first_stage_model.")
    }
    autoprune, inputs = handler(demo, "alloy_tk_autoprune")
    status, _ = last(autoprune("/etc"))
    assert status.startswith("**Error:**") and "inside" in status
    (tmp_path / "Autoprune").mkdir()
    shutil.copy(sd1[1], tmp_path / "Autoprune" / "incoming.safetensors")
    status, report = last(autoprune(""))
    assert status == "Autoprune: done." and (tmp_path / "incoming.safetensors").is_file(), report
    assert not (tmp_path / "Autoprune" / "incoming.safetensors").exists()
    inspect_inputs = handler(demo, "alloy_tk_inspect")[1]
    assert last(inspect(*values_for(inspect_inputs, alloy_tk_model=None)))[0] == "**Error:** choose a checkpoint"


def test_analysis_tab_table_heatmap_elements_metadata_and_image(tmp_path, sd1):
    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    workbench = Workbench(FolderHost(str(tmp_path)))
    demo = build_ui(workbench)
    run, inputs = handler(demo, "alloy_an_run")
    status, rows, heatmap, chart, csv = last(run(sd1[0].name, sd1[1].name, True))
    assert "keys compared" in status and rows[0][0] == "BASE" and heatmap.endswith(".png") and csv.endswith(".csv")
    assert Image.open(heatmap).format == "PNG" and Image.open(chart).format == "PNG" and chart != heatmap
    listing, _ = handler(demo, "alloy_an_el_run")
    rows, csv_path = listing(sd1[0].name, "IN04")
    rows = table_rows(rows)
    assert rows and all(r[1] == "IN04" for r in rows) and rows[0][6] == "unet"
    assert open(csv_path).read().splitlines()[1].split(",")[0] == rows[0][0]
    assert all(r[2] == "" for r in rows)  # SD1 has no finer schema
    merge, merge_inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in merge_inputs]
    values = [c.value for c in merge_inputs]
    values[ids.index("alloy_model_a")], values[ids.index("alloy_model_b")] = sd1[0].name, sd1[1].name
    values[ids.index("alloy_save_name")] = "merged"
    assert last(merge(*values))[0].startswith("Saved")
    show, _ = handler(demo, "alloy_an_md_run")
    note, recipe, digest, text = show("merged.safetensors")
    assert "weighted_sum(A, B" in recipe and len(digest) == 64 and '"sd_merge_recipe": {' in text
    verify, _ = handler(demo, "alloy_an_md_verify")
    assert verify(recipe, digest).startswith("The recipe's hash is")
    assert "edited or is damaged" in verify(recipe.replace("alpha=0.5", "alpha=0.6"), digest)
    load_recipe, _ = handler(demo, "alloy_an_md_load")
    assert load_recipe(recipe)[0] == recipe
    image = Image.new("RGB", (8, 8))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 2, Alloy recipe: 1a2b3c4d5e, Alloy history: 7")
    image.save(tmp_path / "x.png", pnginfo=info)
    from_png, _ = handler(demo, "alloy_an_png")
    text, history_id = from_png(Image.open(tmp_path / "x.png"))
    assert "History id **7**" in text and "1a2b3c4d5e" in text and history_id == 7


def test_lora_elements_list_type_rank_alpha_target_and_block(tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "Lora").mkdir()
    modules = {  # real SD1 widths, rank 1
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (640, 768),
        "lora_te_text_model_encoder_layers_3_mlp_fc1": (3072, 768),
    }
    tensors = {}
    for name, (out, width) in modules.items():
        tensors[f"{name}.lora_up.weight"] = torch.zeros(out, 1)
        tensors[f"{name}.lora_down.weight"] = torch.zeros(1, width)
        tensors[f"{name}.alpha"] = torch.tensor(0.5)
    tensors["lora_unet_mystery.hada_w1_a"] = torch.zeros(4, 1)
    tensors["lora_unet_mystery.hada_w1_b"] = torch.zeros(1, 4)
    tensors["lora_unet_mystery.hada_w2_a"] = torch.zeros(4, 1)
    tensors["lora_unet_mystery.hada_w2_b"] = torch.zeros(1, 4)
    save_file(tensors, str(tmp_path / "Lora" / "small.safetensors"))
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    listing, _ = handler(demo, "alloy_an_el_lora_run")
    rows = {r[0]: r for r in table_rows(listing("small", "")[0])}
    attn = rows["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"]
    key = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    assert attn[1:] == ["lora", 1, "0.5", key, "IN04"]
    assert rows["lora_te_text_model_encoder_layers_3_mlp_fc1"][5] == "BASE"
    assert rows["lora_unet_mystery"][1:5] == ["loha", 1, "", "not found"]
    assert [r[0] for r in table_rows(listing("small", "IN04")[0])] == [attn[0]]


def test_the_webui_autoprunes_its_folder_at_start_when_set(webui, sd1):
    models = webui.folder.parent
    (models / "Autoprune").mkdir()
    shutil.copy(sd1[2], models / "Autoprune" / "new.safetensors")
    assert webui.workbench.autoprune_at_start() == []  # the setting is off by default
    webui.shared.opts.data["alloy_autoprune_folder"] = "Autoprune"
    lines = webui.workbench.autoprune_at_start()
    assert lines == [f"new.safetensors → {webui.folder / 'new.safetensors'}"]
    assert not (models / "Autoprune" / "new.safetensors").exists() and (webui.folder / "new.safetensors").is_file()
    webui.shared.opts.data["alloy_autoprune_folder"] = "../../etc"
    assert webui.workbench.autoprune_at_start()[0].startswith("autoprune: ")


def test_sdxl_elements_carry_the_fine_slot(tmp_path, sdxl):
    shutil.copy(sdxl[0], tmp_path / sdxl[0].name)
    from lib_merge.app.toolkit import elements

    rows = elements(sdxl[0].name, FolderHost(str(tmp_path)), "IN04")
    assert rows and all(r[1] == "IN04" and r[2].startswith("IN4") for r in rows)  # IN04 splits into IN40, IN41…
