"""MBW tab: block weights for alpha as sliders (26 SD1/SD2, 20 SDXL, 110 extended SDXL), text and presets."""

from __future__ import annotations

import gradio as gr

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.arch.presets import preset_names
from lib_merge.methods import get_method
from lib_merge.ui.compat import update
from lib_merge.ui.tabs import Page
from lib_merge.ui.values import MBW_ARCHS, mbw_text, vector_values


def _slider_names(schema_id: str) -> tuple[str, ...]:
    schema = SCHEMAS[schema_id]
    extended = any(s.fine == schema_id for s in SCHEMAS.values())
    return schema.names_with_vae() if extended else schema.slots


def build(widgets: dict) -> None:
    widgets["use_mbw"] = gr.Checkbox(label="Use block weights for alpha", value=False, elem_id="alloy_use_mbw")
    with gr.Row():
        widgets["mbw_arch"] = gr.Radio(list(MBW_ARCHS), value="SD1/SD2 (26)", label="Schema", elem_id="alloy_mbw_arch")
        preset = gr.Dropdown(preset_names(SCHEMAS["sd1"]), label="Preset", value=None, elem_id="alloy_mbw_preset")
    with gr.Row():
        text = gr.Textbox(
            label="Block weights: 26/20/110 numbers, or named (IN00-IN05=0.2 OUT*=1 *=0.5), or a preset name",
            elem_id="alloy_mbw_text",
            scale=4,
        )
        apply_text = gr.Button("Set sliders", elem_id="alloy_mbw_apply")
        read = gr.Button("Read sliders", elem_id="alloy_mbw_read")
    message = gr.Markdown("", elem_id="alloy_mbw_message")
    alpha = get_method("weighted_sum").param("alpha")  # block weights are alpha per block: its range and default
    low, high = alpha.slider_range
    groups = {}
    for schema_id in MBW_ARCHS.values():
        names = _slider_names(schema_id)
        per_row = 6 if len(names) < 40 else 10
        with gr.Column(visible=schema_id == "sd1") as group:
            sliders = []
            for start in range(0, len(names), per_row):
                with gr.Row():
                    for slot in names[start : start + per_row]:
                        sliders.append(
                            gr.Slider(
                                low,
                                high,
                                value=alpha.default,
                                step=0.01,
                                label=slot,
                                elem_id=f"alloy_{schema_id}_{slot}",
                            )
                        )
        groups[schema_id] = group
        widgets[f"mbw_{schema_id}"] = sliders

    def switch(arch):
        schema_id = MBW_ARCHS[arch]
        names = preset_names(SCHEMAS[schema_id])
        return [update(visible=schema_id == s) for s in groups] + [update(choices=names, value=None)]

    widgets["mbw_arch"].change(switch, [widgets["mbw_arch"]], list(groups.values()) + [preset])

    for schema_id in groups:
        count = len(widgets[f"mbw_{schema_id}"])

        def fill(arch, spec, _schema_id=schema_id, _count=count):
            if MBW_ARCHS[arch] != _schema_id or not (spec and spec.strip()):
                return [update() for _ in range(_count)] + [update()]
            try:
                values = vector_values(spec, _schema_id)
            except Exception as e:  # noqa: BLE001 - shown to the user, sliders stay as they are
                return [update() for _ in range(_count)] + [f"**Error:** {e}"]
            return [update(value=v) for v in values] + [f"Set {_count} sliders."]

        outputs = widgets[f"mbw_{schema_id}"] + [message]
        apply_text.click(fill, [widgets["mbw_arch"], text], outputs)
        preset.change(fill, [widgets["mbw_arch"], preset], outputs)

    all_sliders = [s for schema_id in groups for s in widgets[f"mbw_{schema_id}"]]

    def read_sliders(arch, *values):
        start = 0
        for schema_id in groups:
            count = len(widgets[f"mbw_{schema_id}"])
            if schema_id == MBW_ARCHS[arch]:
                return mbw_text(values[start : start + count])
            start += count
        return ""

    read.click(read_sliders, [widgets["mbw_arch"]] + all_sliders, [text])


class MbwTab:
    key, label = "mbw", "MBW"

    def build(self, page: Page) -> None:
        build(page.widgets)

    def wire(self, page: Page) -> None:
        """Its sliders are fields of the merge form; the Merge tab's buttons read them."""
