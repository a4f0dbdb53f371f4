"""Toolkit tab: inspect, fingerprint, prune, convert, extract or replace a component, autoprune a folder."""

from __future__ import annotations

import gradio as gr

from lib_merge.app.toolkit import ToolkitRequest, run_autoprune, run_toolkit
from lib_merge.app.workbench import Workbench
from lib_merge.ui.compat import update
from lib_merge.ui.jobs import run_in_thread
from lib_merge.ui.tabs import Page
from lib_merge.ui.values import SAVE_DTYPES

COMPONENTS = ["vae", "unet", "clip_l", "clip_g", "clip_h", "diffuser", "t5xxl"]


def build(workbench: Workbench) -> dict:
    host = workbench.host
    parts: dict = {}
    gr.Markdown("Find out what a checkpoint holds and what is wrong with it; prune, convert, take a component "
                "out or swap one in. New files go to the checkpoint folder; nothing is replaced unless you tick "
                "overwrite.")  # fmt: skip
    with gr.Row():
        parts["model"] = gr.Dropdown(host.checkpoint_titles(), value=host.selected_checkpoint(), label="Checkpoint",
                                     elem_id="alloy_tk_model")  # fmt: skip
        parts["refresh"] = gr.Button("Refresh list", elem_id="alloy_tk_refresh")
        parts["inspect"] = gr.Button("Inspect", variant="primary", elem_id="alloy_tk_inspect")
        parts["fingerprint"] = gr.Button("Fingerprint", elem_id="alloy_tk_fingerprint")
    with gr.Accordion("Prune or convert", open=True):
        with gr.Row():
            parts["dtype"] = gr.Radio([*SAVE_DTYPES, "keep"], value="fp16", label="dtype",
                                      elem_id="alloy_tk_dtype")  # fmt: skip
            parts["keep_ema"] = gr.Checkbox(label="Keep EMA", value=False, elem_id="alloy_tk_keep_ema")
            parts["fix_ids"] = gr.Checkbox(label="Fix position_ids", value=True, elem_id="alloy_tk_fix_ids")
            parts["clamp"] = gr.Checkbox(label="Clamp to the dtype's range", value=False, elem_id="alloy_tk_clamp")
            parts["prune"] = gr.Button("Prune", elem_id="alloy_tk_prune")
            parts["convert"] = gr.Button("Convert", elem_id="alloy_tk_convert")
    with gr.Accordion("Components", open=False):
        with gr.Row():
            parts["component"] = gr.Dropdown(COMPONENTS, value="vae", label="Component", elem_id="alloy_tk_component")
            parts["donor"] = gr.Dropdown(host.checkpoint_titles(), label="Take it from (Replace)",
                                         elem_id="alloy_tk_donor")  # fmt: skip
            parts["extract"] = gr.Button("Extract to its own file", elem_id="alloy_tk_extract")
            parts["replace"] = gr.Button("Replace", elem_id="alloy_tk_replace")
    with gr.Accordion("Autoprune a folder", open=False):
        with gr.Row():
            parts["folder"] = gr.Textbox(label="Folder in the models folder (empty: Autoprune); each checkpoint "
                                         "in it is pruned to fp16 and moved",
                                         elem_id="alloy_tk_folder")  # fmt: skip
            parts["autoprune"] = gr.Button("Run autoprune", elem_id="alloy_tk_autoprune")
    with gr.Row():
        parts["name"] = gr.Textbox(label="Output file name (empty: from the input)", elem_id="alloy_tk_name")
        parts["overwrite"] = gr.Checkbox(label="Overwrite an existing file", value=False, elem_id="alloy_tk_overwrite")
    parts["status"] = gr.Markdown("", elem_id="alloy_tk_status")
    parts["report"] = gr.Textbox(label="Report", lines=18, max_lines=60, elem_id="alloy_tk_report")
    return parts


def wire(workbench: Workbench, parts: dict) -> list:
    """The Toolkit's events; returns those that write files (the model lists are read again after them)."""
    host = workbench.host
    status, report = parts["status"], parts["report"]
    inputs = [parts[n] for n in ("model", "dtype", "keep_ema", "fix_ids", "clamp", "component", "donor", "name",
                                 "overwrite")]  # fmt: skip

    def action(name: str):
        def steps(model, dtype, keep_ema, fix_ids, clamp, component, donor, file_name, overwrite):
            if not model:
                yield "**Error:** choose a checkpoint", update()
                return
            request = ToolkitRequest(name, model, dtype, bool(keep_ema), bool(fix_ids), bool(clamp), component,
                                     donor or "", file_name or "", bool(overwrite))  # fmt: skip
            job = lambda: workbench.file_job(f"{name} {model}", lambda step: run_toolkit(request, host, step))  # noqa: E731
            for kind, value in run_in_thread(job, workbench.progress.text):
                if kind == "done":
                    yield f"{name.capitalize()}: done.", value
                else:
                    yield value, update()

        return steps

    writing = []
    for name in ("inspect", "fingerprint", "prune", "convert", "extract", "replace"):
        event = parts[name].click(action(name), inputs, [status, report])
        if name not in ("inspect", "fingerprint"):
            writing.append(event)

    def run_folder(folder):
        job = lambda: workbench.file_job("autoprune", lambda step: run_autoprune(folder or "", host))  # noqa: E731
        for kind, value in run_in_thread(job, workbench.progress.text):
            yield (("Autoprune: done.", value) if kind == "done" else (value, update()))

    writing.append(parts["autoprune"].click(run_folder, [parts["folder"]], [status, report]))
    return writing


class ToolkitTab:
    key, label = "toolkit", "Toolkit"

    def build(self, page: Page) -> None:
        parts = page.parts[self.key] = build(page.workbench)
        page.checkpoint_lists.extend(parts[n] for n in ("model", "donor"))
        page.refresh_buttons.append(parts["refresh"])

    def wire(self, page: Page) -> None:
        page.writing.extend(wire(page.workbench, page.parts[self.key]))
