"""MBW tab: block weights for alpha as sliders (26 for SD1/SD2, 20 for SDXL), text and presets."""

from __future__ import annotations

import gradio as gr

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.arch.presets import preset_names
from lib_merge.ui.compat import update
from lib_merge.ui.values import MBW_ARCHS, mbw_text, vector_values


def build(widgets: dict) -> None:
    widgets["use_mbw"] = gr.Checkbox(label="Use block weights for alpha", value=False, elem_id="alloy_use_mbw")
    with gr.Row():
        widgets["mbw_arch"] = gr.Radio(list(MBW_ARCHS), value="SD1/SD2 (26)", label="Schema", elem_id="alloy_mbw_arch")
        preset = gr.Dropdown(preset_names(SCHEMAS["sd1"]), label="Preset", value=None, elem_id="alloy_mbw_preset")
    with gr.Row():
        text = gr.Textbox(
            label="Block weights: 26/20 numbers, or named (IN00-IN05=0.2 OUT*=1 *=0.5), or a preset name",
            elem_id="alloy_mbw_text",
            scale=4,
        )
        apply_text = gr.Button("Set sliders", elem_id="alloy_mbw_apply")
        read = gr.Button("Read sliders", elem_id="alloy_mbw_read")
    message = gr.Markdown("", elem_id="alloy_mbw_message")
    groups = {}
    for schema_id in MBW_ARCHS.values():
        schema = SCHEMAS[schema_id]
        with gr.Column(visible=schema_id == "sd1") as group:
            sliders = []
            per_row = 6
            for start in range(0, len(schema.slots), per_row):
                with gr.Row():
                    for slot in schema.slots[start : start + per_row]:
                        sliders.append(
                            gr.Slider(-1, 2, value=0.5, step=0.01, label=slot, elem_id=f"alloy_{schema_id}_{slot}")
                        )
        groups[schema_id] = group
        widgets[f"mbw_{schema_id}"] = sliders

    def switch(arch):
        schema_id = MBW_ARCHS[arch]
        names = preset_names(SCHEMAS[schema_id])
        return [update(visible=schema_id == s) for s in groups] + [update(choices=names, value=None)]

    widgets["mbw_arch"].change(switch, [widgets["mbw_arch"]], list(groups.values()) + [preset])

    def fill(arch, spec):
        schema_id = MBW_ARCHS[arch]
        count = len(SCHEMAS[schema_id].slots)
        try:
            values = vector_values(spec, schema_id) if spec and spec.strip() else None
        except Exception as e:  # noqa: BLE001 - shown to the user, sliders stay as they are
            return [update() for _ in range(count)] + [f"**Error:** {e}"]
        if values is None:
            return [update() for _ in range(count)] + [""]
        return [update(value=v) for v in values] + [f"Set {count} sliders."]

    for schema_id, sliders in ((k, widgets[f"mbw_{k}"]) for k in groups):
        outputs = sliders + [message]

        def fill_for(arch, spec, _schema_id=schema_id):
            if MBW_ARCHS[arch] != _schema_id:
                return [update() for _ in SCHEMAS[_schema_id].slots] + [update()]
            return fill(arch, spec)

        apply_text.click(fill_for, [widgets["mbw_arch"], text], outputs)
        preset.change(fill_for, [widgets["mbw_arch"], preset], outputs)

    def read_sliders(arch, *values):
        schema_id = MBW_ARCHS[arch]
        count_sd1 = len(SCHEMAS["sd1"].slots)
        chosen = values[:count_sd1] if schema_id == "sd1" else values[count_sd1:]
        return mbw_text(chosen)

    read.click(read_sliders, [widgets["mbw_arch"]] + widgets["mbw_sd1"] + widgets["mbw_sdxl"], [text])
