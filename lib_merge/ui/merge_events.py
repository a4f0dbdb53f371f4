"""The Merge tab's events: merge, generate, merge and generate, the buttons and the recipe box, and the
Gen inputs the XYZ plot and the LoRA tab share."""

from __future__ import annotations

from lib_merge.app.ports import GenSettings, Host, patchable
from lib_merge.app.workbench import Workbench
from lib_merge.recipe import print_recipe
from lib_merge.recipe.form import CALC_MODES, compile_form
from lib_merge.ui.compat import update
from lib_merge.ui.form import Form
from lib_merge.ui.jobs import error_text, run_in_thread
from lib_merge.ui.tabs import Page
from lib_merge.ui.values import GEN_OVERRIDE_FIELDS, gen_overrides, merge_request, save_request, template_params


def footer_text(workbench: Workbench) -> str:
    stats = workbench.cache_stats()
    cache = str(stats) if stats else "cache: off"
    host = workbench.host
    if patchable(host) is None:
        return f"Mode: save and load (merges are written, then selected) · {cache}" if host.live is not None else cache
    live = workbench.live
    merged = f"Loaded: **{live.name}** (history {live.history_id})" if live else "Loaded: the selected checkpoint"
    return f"Mode: in place · {merged} · {cache}"


def wire(page: Page) -> None:
    """The Merge tab's events; those that may write a checkpoint file go to `page.writing`."""
    workbench, host, form, parts = page.workbench, page.host, page.form, page.parts["merge"]
    mode, calc = form.widgets["mode"], form.widgets["calc"]

    def calc_changed(calc_mode, current):
        """Only the modes that work with this calc mode stay selectable."""
        allowed = list(CALC_MODES.get(calc_mode, CALC_MODES["normal"])[0])
        return update(choices=allowed, value=current if current in allowed else allowed[0])

    calc.change(calc_changed, [calc, mode], [mode])
    _show_method_params(form.widgets, parts)
    inputs = form.components()
    status, recipe, footer = parts["status"], form.widgets["recipe"], parts["footer"]

    def merge_steps(raw):
        values = form.values(raw)
        try:
            request = merge_request(values, always_save=patchable(host) is None)
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

    gen_parts = parts["gen_inputs"]
    gen_settings = gen_settings_fn(host, gen_parts)

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

    if host.generation is not None:
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
    page.writing.extend(writing)


def _show_method_params(widgets: dict, out: dict) -> None:
    """The chosen method shows its own parameters."""
    rows = out["method_rows"]

    def show(method):
        return [update(visible=name == method) for name in rows]

    widgets["method"].change(show, [widgets["method"]], list(rows.values()))


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

    def restore():
        return guarded(workbench.restore)(), footer_text(workbench)  # the footer names what is loaded now

    parts["restore"].click(restore, [], [status, footer])
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


def gen_settings_fn(host: Host, gen_parts: dict):
    """raw Gen inputs → (GenSettings, notes): the last txt2img run, under the txt2img tab, under Alloy's overrides."""

    def gen_settings(raw) -> tuple[GenSettings, list[str]]:
        n_over = len(GEN_OVERRIDE_FIELDS)
        overrides = gen_overrides(dict(zip(GEN_OVERRIDE_FIELDS, raw[:n_over], strict=True)))
        names = gen_parts["names"]
        txt2img = dict(zip(names, raw[n_over : n_over + len(names)], strict=True))
        scripts = raw[n_over + len(names) :]
        base = host.generation.base_settings() if host.generation is not None else GenSettings()
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


def gen_inputs(host: Host, parts: dict) -> dict:
    """The Gen button's inputs: Alloy's overrides, the txt2img components and the txt2img scripts' inputs
    (those two only in a WebUI)."""
    overrides = [parts["gen_overrides"][name] for name in GEN_OVERRIDE_FIELDS]
    webui = host.webui
    names, comps, missing = webui.gen_components() if webui is not None else ([], [], [])
    scripts = webui.script_components() if webui is not None else []
    return {"inputs": overrides + comps + scripts, "names": names, "missing": missing}


def prompt_boxes(host: Host, parts: dict) -> list:
    """The prompts whose <lora:…> tags "Get from prompt" reads: Alloy's own Gen prompt and the WebUI's txt2img one."""
    boxes = [parts["gen_overrides"]["prompt"]] if "gen_overrides" in parts else []
    components = host.webui.components if host.webui is not None else {}
    return boxes + ([components["txt2img_prompt"]] if "txt2img_prompt" in components else [])
