"""Merge tab: models, mode, alpha/beta, save options, the buttons, status, recipe and images."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from lib_merge.methods import METHODS
from lib_merge.methods.registry import MethodSpec, ParamSpec
from lib_merge.recipe.form import CALC_MODES, MODERN_METHODS
from lib_merge.ui.compat import update
from lib_merge.ui.merge_events import footer_text, gen_inputs, wire
from lib_merge.ui.tabs import Page
from lib_merge.ui.values import (
    FILTER_MODES,
    FORMATS,
    MODES,
    NO_METHOD,
    SAVE_DTYPES,
    TEMPLATE_FIELDS,
    control_value,
    method_param_controls,
    method_param_field,
)


def _slider(name: str) -> gr.Slider:
    """A parameter's slider: range and default from the first method that takes it (modes first)."""
    users = [spec for spec in METHODS.values() if spec.takes(name) and spec.kind != "op"]
    param = users[0].param(name)
    low, high = param.slider_range
    named = "" if len(users) > 4 else f" ({', '.join(spec.label for spec in users)})"
    step = 0.001 if high - low <= 3 else 0.01
    return gr.Slider(low, high, value=param.default, step=step, label=name + named, elem_id=f"alloy_{name}")


def _method_control(spec: MethodSpec, param: ParamSpec):
    """One method's parameter as a control of its kind, with that method's default and range. The label
    names the method too: the WebUI keeps control values in ui-config.json by label, and a shared
    "alpha" would give every method the Merge tab's α."""
    label = f"{param.name} ({spec.label})"
    elem_id = f"alloy_{spec.name}_{param.name}"
    if param.choices:
        return gr.Dropdown(list(param.choices), value=param.default, label=label, elem_id=elem_id)
    if param.boolean:
        return gr.Checkbox(value=bool(param.default), label=label, elem_id=elem_id)
    if param.integer or param.per_model:  # exact whole numbers; a list, one number per model
        hint = " (one number, or one per model)" if param.per_model else ""
        return gr.Textbox(value=control_value(param, param.default), max_lines=1, label=label + hint, elem_id=elem_id)
    low, high = param.slider_range
    step = 0.001 if high - low <= 3 else 0.01
    return gr.Slider(low, high, value=param.default, step=step, label=label, elem_id=elem_id)


def _method_rows(widgets: dict) -> dict[str, gr.Row]:
    """A row of controls per method, shown while that method is chosen."""
    rows: dict[str, gr.Row] = {}
    for spec, param in method_param_controls():
        if spec.name not in rows:
            with gr.Row(visible=False) as row:
                rows[spec.name] = row
        with rows[spec.name]:
            widgets[method_param_field(spec.name, param.name)] = _method_control(spec, param)
    return rows


@dataclass(frozen=True)
class Offers:
    """The host's optional ports the tab shows buttons for (app/ports.py)."""

    live: bool  # a loaded model: merges go into it (Restore, Save current merge); else into files
    generation: bool  # Gen, Merge & Gen, the generation settings and the images


def build(
    widgets: dict,
    titles: list[str],
    offers: Offers,
    save_dtype: str = "fp16",
    model_a: str | None = None,
    footer: str = "",
) -> dict:
    """Creates the widgets (into `widgets`) and returns the buttons and output components; `model_a` is the
    loaded checkpoint's title, Model A's first value; `footer` the first status line (the merge mode)."""
    live, can_generate = offers.live, offers.generation
    out: dict = {}
    with gr.Row():
        widgets["model_a"] = gr.Dropdown(
            titles, value=model_a, label="Model A (primary)", elem_id="alloy_model_a", scale=3
        )
        widgets["model_b"] = gr.Dropdown(titles, label="Model B", elem_id="alloy_model_b", scale=3)
        widgets["model_c"] = gr.Dropdown(titles, label="Model C", elem_id="alloy_model_c", scale=3)
        out["refresh"] = gr.Button("Refresh", elem_id="alloy_refresh", scale=0, min_width=80)
    with gr.Row():
        widgets["mode"] = gr.Radio(MODES, value="weighted_sum", label="Mode", elem_id="alloy_mode", scale=3)
        widgets["calc"] = gr.Dropdown(list(CALC_MODES), value="normal", label="Calc mode", elem_id="alloy_calc")
        widgets["rebasin"] = gr.Checkbox(
            label="re-basin B to A (B and C aligned to A by exact permutations first; SD1, SD2, SDXL)",
            value=False,
            elem_id="alloy_rebasin",
        )
    with gr.Row():
        for name in ("alpha", "beta", "gamma"):
            widgets[name] = _slider(name)
        widgets["seed"] = gr.Textbox(
            value="0", max_lines=1, label="seed (random, elemental R/U/X)", elem_id="alloy_seed"
        )
    with gr.Accordion("Modern and N-model methods (A is the base; B, C and more models follow)", open=False):
        with gr.Row():
            widgets["method"] = gr.Dropdown(
                [NO_METHOD, *MODERN_METHODS], value=NO_METHOD, label="Method", elem_id="alloy_method"
            )
            widgets["more_models"] = gr.Dropdown(
                titles, multiselect=True, label="More models (up to 16 in all)", elem_id="alloy_more_models", scale=3
            )
        out["method_rows"] = _method_rows(widgets)
    with gr.Accordion("Elemental and include/exclude", open=False):
        widgets["elemental"] = gr.Textbox(
            label="Elemental rules (Blocks:Elements:Ratio, comma or line separated; the last match wins)",
            lines=2,
            elem_id="alloy_elemental",
        )
        with gr.Row():
            widgets["filter_mode"] = gr.Radio(
                FILTER_MODES, value="Off", label="Include / exclude", elem_id="alloy_filter_mode"
            )
            widgets["filter_text"] = gr.Textbox(
                label="Blocks, VAE, Adjust or key substrings", scale=3, elem_id="alloy_filter_text"
            )
    with gr.Accordion("Save", open=not live):
        with gr.Row():
            widgets["save_name"] = gr.Textbox(label="File name (empty: automatic)", elem_id="alloy_save_name", scale=3)
            widgets["save_dtype"] = gr.Radio(SAVE_DTYPES, value=save_dtype, label="dtype", elem_id="alloy_save_dtype")
            widgets["save_format"] = gr.Radio(FORMATS, value="safetensors", label="format", elem_id="alloy_format")
        with gr.Row():
            widgets["save_prune"] = gr.Checkbox(label="prune", value=True, elem_id="alloy_prune")
            widgets["save_overwrite"] = gr.Checkbox(label="overwrite", value=False, elem_id="alloy_overwrite")
            widgets["save_clamp"] = gr.Checkbox(
                label="fp8: clamp values beyond its range", value=False, elem_id="alloy_save_clamp"
            )
            widgets["save_after"] = gr.Checkbox(
                label="save after merging", value=not live, visible=live, elem_id="alloy_save_after"
            )
    with gr.Row():
        out["merge"] = gr.Button("Merge" if live else "Merge and save", variant="primary", elem_id="alloy_merge")
        out["merge_gen"] = gr.Button("Merge & Gen", visible=can_generate, elem_id="alloy_merge_gen")
        out["gen"] = gr.Button("Gen", visible=can_generate, elem_id="alloy_gen")
        out["stop"] = gr.Button("Stop", elem_id="alloy_stop")
        out["save_current"] = gr.Button("Save current merge", visible=live, elem_id="alloy_save_current")
        out["restore"] = gr.Button("Restore", visible=live, elem_id="alloy_restore")
        out["clear_cache"] = gr.Button("Clear cache", elem_id="alloy_clear_cache")
    out["status"] = gr.Markdown("Ready.", elem_id="alloy_status")
    with gr.Accordion("Recipe", open=False):
        widgets["use_recipe"] = gr.Checkbox(
            label="Merge runs this recipe text instead of the settings", value=False, elem_id="alloy_use_recipe"
        )
        widgets["recipe"] = gr.Textbox(label="Recipe", lines=8, elem_id="alloy_recipe")
        out["show_recipe"] = gr.Button("Recipe from the settings", elem_id="alloy_show_recipe")
        with gr.Row():  # one field per open param("name") of a template, in name order
            widgets["template_values"] = [
                gr.Textbox(label=f"param {i + 1}", visible=False, elem_id=f"alloy_template_{i}")
                for i in range(TEMPLATE_FIELDS)
            ]
    with gr.Accordion("Generation (empty or 0 = the txt2img tab's value)", open=False, visible=can_generate):
        gen = {}
        gen["prompt"] = gr.Textbox(label="Prompt", lines=2, elem_id="alloy_gen_prompt")
        gen["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2, elem_id="alloy_gen_negative")
        with gr.Row():
            gen["steps"] = gr.Number(label="Steps", value=0, precision=0, elem_id="alloy_gen_steps")
            gen["sampler"] = gr.Textbox(label="Sampler", elem_id="alloy_gen_sampler")
            gen["cfg_scale"] = gr.Number(label="CFG", value=0, elem_id="alloy_gen_cfg")
            gen["seed"] = gr.Textbox(label="Seed", elem_id="alloy_gen_seed")
        with gr.Row():
            gen["width"] = gr.Number(label="Width", value=0, precision=0, elem_id="alloy_gen_width")
            gen["height"] = gr.Number(label="Height", value=0, precision=0, elem_id="alloy_gen_height")
            gen["batch_size"] = gr.Number(label="Batch size", value=0, precision=0, elem_id="alloy_gen_batch")
        out["gen_overrides"] = gen
    out["gallery"] = gr.Gallery(label="Images", columns=4, visible=can_generate, elem_id="alloy_gallery")
    out["infotext"] = gr.Textbox(label="Infotext", lines=3, visible=can_generate, elem_id="alloy_infotext")
    out["footer"] = gr.Markdown(footer, elem_id="alloy_footer")
    return out


class MergeTab:
    key, label = "merge", "Merge"

    def build(self, page: Page) -> None:
        host = page.host
        offers = Offers(live=host.live is not None, generation=host.generation is not None)
        titles, footer = host.checkpoint_titles(), footer_text(page.workbench)
        parts = page.parts[self.key] = build(
            page.widgets, titles, offers, host.config().save_dtype, host.selected_checkpoint(), footer
        )
        parts["gen_inputs"] = gen_inputs(host, parts)  # Gen's inputs, the XYZ plot's too
        page.checkpoint_lists.extend(page.widgets[n] for n in ("model_a", "model_b", "model_c", "more_models"))
        page.refresh_buttons.append(parts["refresh"])

    def wire(self, page: Page) -> None:
        wire(page)
        host = page.host

        def loaded_model_a():
            """A fresh page starts Model A at the loaded checkpoint (the WebUI would restore the value it
            stored in ui-config.json, and Forge's selector has no elem_id to follow)."""
            selected = host.selected_checkpoint()
            return update(value=selected) if selected else update()

        page.page_loads.append((loaded_model_a, [page.widgets["model_a"]]))
