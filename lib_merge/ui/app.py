"""The Alloy tab set (nine tabs) for the WebUI and the standalone app, wired to the workbench."""

from __future__ import annotations

import gradio as gr

from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.ports import GenSettings
from lib_merge.app.workbench import Workbench
from lib_merge.recipe import print_recipe
from lib_merge.recipe.form import CALC_MODES, compile_form
from lib_merge.ui import analysis_tab, dice_tab, history_tab, lora_tab, mbw_tab, merge_tab, toolkit_tab, xyz_tab
from lib_merge.ui.compat import update
from lib_merge.ui.form import Form
from lib_merge.ui.jobs import error_text, run_in_thread
from lib_merge.ui.lists import ModelLists
from lib_merge.ui.values import (
    ADJUST_LABELS,
    GEN_OVERRIDE_FIELDS,
    gen_overrides,
    merge_request,
    save_request,
    template_params,
)

TAB_LABELS = ("Merge", "MBW", "XYZ plot", "Adjust", "Dice", "LoRA", "Toolkit", "Analysis", "History")


def footer_text(workbench: Workbench) -> str:
    stats = workbench.cache_stats()
    cache = str(stats) if stats else "cache: off"
    host = workbench.host
    if not host.can_patch:
        return f"Mode: save and load (merges are written, then selected) · {cache}" if host.can_generate else cache
    live = workbench.live
    merged = f"Loaded: **{live.name}** (history {live.history_id})" if live else "Loaded: the selected checkpoint"
    return f"Mode: in place · {merged} · {cache}"


def follow_checkpoint(selector, model_a, host) -> None:
    """Model A follows the host's checkpoint selector: the title chosen there, or model A of a loaded merge."""

    def follow(title):
        if title in host.checkpoint_titles():
            return update(value=title)
        selected = host.selected_checkpoint()
        return update(value=selected) if selected else update()

    selector.change(follow, [selector], [model_a])


# The Analysis tab's checkpoint dropdowns (its explain section's among them).
ANALYSIS_CHECKPOINT_LISTS = ("a", "b", "el_model", "md_model", "ex_m", "ex_a", "ex_b", "ex_c")


def build_ui(workbench: Workbench, desk: PlotDesk | None = None) -> gr.Blocks:
    """The tabs over one workbench; the plot desk is shared with the HTTP routes when the caller has one."""
    desk = desk or PlotDesk(workbench)
    host = workbench.host
    can_generate = host.can_generate
    widgets: dict = {}
    with gr.Blocks(analytics_enabled=False, title="Alloy") as demo:
        with gr.Tabs(elem_id="alloy_tabs"):
            with gr.Tab("Merge", elem_id="alloy_tab_merge"):
                parts = merge_tab.build(
                    widgets,
                    host.checkpoint_titles(),
                    can_generate,
                    host.config().save_dtype,
                    host.selected_checkpoint(),
                    footer_text(workbench),
                )
            with gr.Tab("MBW", elem_id="alloy_tab_mbw"):
                mbw_tab.build(widgets)
            for label in TAB_LABELS[2:-1]:
                with gr.Tab(label, elem_id=f"alloy_tab_{label.split()[0].lower()}"):
                    if label == "Adjust":
                        adjust_tab(widgets)
                    elif label == "XYZ plot":
                        plot_parts = xyz_tab.build(can_generate)
                    elif label == "Dice":
                        dice_parts = dice_tab.build()
                    elif label == "LoRA":
                        prompts = _prompt_boxes(host, parts)
                        lora_parts = lora_tab.build(workbench, prompts)
                    elif label == "Toolkit":
                        toolkit_parts = toolkit_tab.build(workbench)
                    elif label == "Analysis":
                        analysis_parts = analysis_tab.build(workbench)
            with gr.Tab("History", elem_id="alloy_tab_history") as history_page:
                history = history_tab.build(getattr(host, "supermerger_history", ""), workbench.history_path())
                history["page_tab"] = history_page
        writing = _wire(workbench, Form(widgets), parts, history)
        gen_parts, gen_settings = _gen_inputs(host, parts), _gen_settings_fn(host, _gen_inputs(host, parts))
        xyz_tab.wire(desk, Form(widgets), plot_parts, dice_parts, gen_parts["inputs"], gen_settings)
        writing += lora_tab.wire(workbench, lora_parts, prompts, lambda outcome: outcome.message)
        writing += toolkit_tab.wire(workbench, toolkit_parts)
        analysis_tab.wire(workbench, analysis_parts, widgets.get("recipe"), history.get("id"),
                          widgets.get("use_recipe"))  # fmt: skip
        lists = ModelLists(
            [widgets[n] for n in ("model_a", "model_b", "model_c", "more_models")]
            + [toolkit_parts[n] for n in ("model", "donor")]
            + [lora_parts[n] for n in ("model", "extract_a", "extract_b")]
            + [analysis_parts[n] for n in ANALYSIS_CHECKPOINT_LISTS if n in analysis_parts],
            [lora_parts["pick"], analysis_parts["el_lora"]],
        )
        refresh_buttons = [parts["refresh"], toolkit_parts["refresh"], lora_parts["refresh"]]
        lists.wire(demo, host, refresh_buttons, writing)
    return demo


def _prompt_boxes(host, parts: dict) -> list:
    """The prompts whose <lora:…> tags "Get from prompt" reads: Alloy's own Gen prompt and the WebUI's txt2img one."""
    boxes = [parts["gen_overrides"]["prompt"]] if "gen_overrides" in parts else []
    components = getattr(host, "components", {})
    return boxes + ([components["txt2img_prompt"]] if "txt2img_prompt" in components else [])


def adjust_tab(widgets: dict) -> None:
    """Adjust: eight numbers applied to six UNet keys after the merge; all 0 = off."""
    gr.Markdown("Detail (IN, OUT, OUT2) and colour of the merged model; all zero leaves it off.")
    sliders = []
    with gr.Row():
        for i, label in enumerate(ADJUST_LABELS):
            low = -6 if i < 3 else -10
            sliders.append(gr.Slider(low, -low, value=0, step=0.01, label=label, elem_id=f"alloy_adjust_{i}"))
    widgets["adjust"] = sliders


def _wire(workbench: Workbench, form: Form, parts: dict, history: dict) -> list:
    """The Merge tab's events; returns those that may write a checkpoint file."""
    host = workbench.host
    mode, calc = form.widgets["mode"], form.widgets["calc"]

    def calc_changed(calc_mode, current):
        """Only the modes that work with this calc mode stay selectable."""
        allowed = list(CALC_MODES.get(calc_mode, CALC_MODES["normal"])[0])
        return update(choices=allowed, value=current if current in allowed else allowed[0])

    calc.change(calc_changed, [calc, mode], [mode])
    merge_tab.wire(form.widgets, parts)
    inputs = form.components()
    status, recipe, footer = parts["status"], form.widgets["recipe"], parts["footer"]

    def merge_steps(raw):
        values = form.values(raw)
        try:
            request = merge_request(values, always_save=not host.can_patch)
        except Exception as e:  # noqa: BLE001
            yield "error", error_text(e)
            return
        yield from run_in_thread(lambda: workbench.merge(request), lambda: workbench.progress.text())

    def merge(*raw):
        for kind, value in merge_steps(raw):
            if kind == "done":
                yield value.message, value.recipe_text, footer_text(workbench)
            else:
                yield value, update(), update()

    writing = [parts["merge"].click(merge, inputs, [status, recipe, footer])]

    gen_parts = _gen_inputs(host, parts)

    gen_settings = _gen_settings_fn(host, gen_parts)

    def gen_steps(raw):
        try:
            settings, notes = gen_settings(raw)
        except Exception as e:  # noqa: BLE001
            yield "error", error_text(e)
            return
        for kind, value in run_in_thread(lambda: workbench.generate(settings), lambda: workbench.progress.text()):
            if kind == "done":
                value.notes.extend(notes)
            yield kind, value

    def gen(*raw):
        for kind, value in gen_steps(raw):
            if kind == "done":
                text = "Generated." + "".join(f" Note: {n}." for n in value.notes)
                yield text, value.images, value.infotext
            else:
                yield value if kind == "error" else "Generating…", update(), update()

    if host.can_generate:
        parts["gen"].click(gen, gen_parts["inputs"], [status, parts["gallery"], parts["infotext"]])

        def merge_and_gen(*raw):
            merged = None
            for kind, value in merge_steps(raw[: len(inputs)]):
                if kind == "done":
                    merged = value
                    yield value.message + " Generating…", value.recipe_text, footer_text(workbench), update(), update()
                else:
                    yield value, update(), update(), update(), update()
            if merged is None:
                return
            for kind, value in gen_steps(raw[len(inputs) :]):
                if kind == "done":
                    yield merged.message, update(), update(), value.images, value.infotext
                elif kind == "error":
                    yield value, update(), update(), update(), update()

        merge_gen_outputs = [status, recipe, footer, parts["gallery"], parts["infotext"]]
        writing.append(parts["merge_gen"].click(merge_and_gen, inputs + gen_parts["inputs"], merge_gen_outputs))

    writing.append(_wire_buttons(workbench, form, parts))
    _wire_recipe_box(form, parts)
    history_tab.wire(workbench, form, history, recipe)
    return writing


def _wire_buttons(workbench: Workbench, form: Form, parts: dict):
    """Stop, Restore, Save current merge and Clear cache: one call each, the answer in the status line.
    Returns the save's event."""
    inputs = form.components()
    status, footer = parts["status"], parts["footer"]

    def guarded(fn):
        def call(*args):
            try:
                return fn(*args)
            except Exception as e:  # noqa: BLE001
                return error_text(e)

        return call

    parts["stop"].click(guarded(lambda: workbench.stop()), [], [status], queue=False)
    parts["restore"].click(guarded(lambda: workbench.restore()), [], [status])
    saved = parts["save_current"].click(
        guarded(lambda *raw: f"Saved {workbench.save_current(save_request(form.values(raw)))}."), inputs, [status]
    )

    def clear_cache():
        return workbench.clear_cache(), footer_text(workbench)

    parts["clear_cache"].click(clear_cache, [], [status, footer])
    return saved


def _wire_recipe_box(form: Form, parts: dict) -> None:
    """The recipe box: fill it from the settings; a template's open parameters get their fields."""
    inputs = form.components()
    status, recipe = parts["status"], form.widgets["recipe"]

    def show_recipe(*raw):
        try:
            request = merge_request(form.values(raw))
            if request.settings is None:
                return update(), "The recipe box is already the recipe."
            return print_recipe(compile_form(request.settings)), "Recipe from the settings (models not yet hashed)."
        except Exception as e:  # noqa: BLE001
            return update(), error_text(e)

    parts["show_recipe"].click(show_recipe, inputs, [recipe, status])
    fields = form.widgets["template_values"]

    def template_fields(text):
        names = template_params(text or "")
        return [
            update(visible=i < len(names), label=f"param {names[i]!r}" if i < len(names) else f"param {i + 1}")
            for i in range(len(fields))
        ]

    recipe.change(template_fields, [recipe], fields)


def _gen_settings_fn(host, gen_parts: dict):
    """raw Gen inputs → (GenSettings, notes): the last txt2img run, under the txt2img tab, under Alloy's overrides."""

    def gen_settings(raw) -> tuple[GenSettings, list[str]]:
        n_over = len(GEN_OVERRIDE_FIELDS)
        overrides = gen_overrides(dict(zip(GEN_OVERRIDE_FIELDS, raw[:n_over], strict=True)))
        names = gen_parts["names"]
        txt2img = dict(zip(names, raw[n_over : n_over + len(names)], strict=True))
        scripts = raw[n_over + len(names) :]
        base = host.base_settings() if hasattr(host, "base_settings") else GenSettings()
        notes = []
        settings = base.overlay(GenSettings(**txt2img)).overlay(overrides)
        if scripts:
            settings.script_args = tuple(scripts)
        if gen_parts["missing"]:
            notes.append(
                "using the last txt2img run's settings (component " + ", ".join(gen_parts["missing"]) + " not found)"
            )
        return settings, notes

    return gen_settings


def _gen_inputs(host, parts: dict) -> dict:
    """The Gen button's inputs: Alloy's overrides, the txt2img components and the txt2img scripts' inputs."""
    overrides = [parts["gen_overrides"][name] for name in GEN_OVERRIDE_FIELDS]
    names, comps, missing = host.gen_components() if hasattr(host, "gen_components") else ([], [], [])
    scripts = host.script_components() if hasattr(host, "script_components") else []
    return {"inputs": overrides + comps + scripts, "names": names, "missing": missing}
