"""The Analysis tab's "Explain a merge": the block weights that best explain model M as a merge of A and B
(and C), as a table, a chart and a recipe that loads into the Merge tab's recipe box."""

from __future__ import annotations

import gradio as gr

from lib_merge.analysis.explain_chart import chart
from lib_merge.app.explain import COLUMNS, ExplainRequest, explain_checkpoints, rows, summary
from lib_merge.app.workbench import Workbench
from lib_merge.ui.compat import update
from lib_merge.ui.jobs import run_in_thread

MODES = ["auto", "weighted_sum", "add_difference"]


def build(titles: list[str]) -> dict:
    parts: dict = {}
    with gr.Accordion("Explain a merge", open=False):
        gr.Markdown("Which block weights of A and B (and C) best explain model M? A least-squares fit per block; "
                    "a poor fit says M is no such merge.")  # fmt: skip
        with gr.Row():
            parts["ex_m"] = gr.Dropdown(titles, label="M (the model to explain)", elem_id="alloy_ex_m")
            parts["ex_a"] = gr.Dropdown(titles, label="A", elem_id="alloy_ex_a")
            parts["ex_b"] = gr.Dropdown(titles, label="B", elem_id="alloy_ex_b")
            parts["ex_c"] = gr.Dropdown(titles, label="C (optional: add difference)", elem_id="alloy_ex_c")
            parts["ex_mode"] = gr.Dropdown(MODES, value="auto", label="Fit", elem_id="alloy_ex_mode")
            parts["ex_run"] = gr.Button("Explain", variant="primary", elem_id="alloy_ex_run")
        parts["ex_status"] = gr.Markdown("", elem_id="alloy_ex_status")
        with gr.Row():
            parts["ex_table"] = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="alloy_ex_table")
            parts["ex_chart"] = gr.Image(label="Fitted block weights", type="pil", interactive=False,
                                         elem_id="alloy_ex_chart")  # fmt: skip
        with gr.Row():
            parts["ex_recipe"] = gr.Textbox(label="Recipe of the fit", lines=5, elem_id="alloy_ex_recipe")
            parts["ex_load"] = gr.Button("Load into Merge tab", elem_id="alloy_ex_load")
    return parts


def wire(workbench: Workbench, parts: dict, merge_recipe, use_recipe=None) -> None:
    """`merge_recipe` is the Merge tab's recipe box (None where there is none), `use_recipe` its checkbox
    "Merge runs this recipe text": loading ticks it, so the next Merge makes the fitted merge."""
    host = workbench.host

    def run(m, a, b, c, mode):
        if not m or not a or not b:
            yield "**Error:** choose the models M, A and B", update(), update(), update()
            return
        request = ExplainRequest(m, a, b, c or None, mode or "auto")
        job = lambda: workbench.file_job("explain", lambda step: explain_checkpoints(request, host, step))  # noqa: E731
        for kind, value in run_in_thread(job, workbench.progress.text):
            if kind == "done":
                picture = chart(value.explanation, host.font_path())
                yield summary(value.explanation), rows(value.explanation), picture, value.recipe
            else:
                yield value, update(), update(), update()

    inputs = [parts[k] for k in ("ex_m", "ex_a", "ex_b", "ex_c", "ex_mode")]
    parts["ex_run"].click(run, inputs, [parts["ex_status"], parts["ex_table"], parts["ex_chart"], parts["ex_recipe"]])
    if merge_recipe is None:
        return
    outputs = [merge_recipe, parts["ex_status"]] + ([use_recipe] if use_recipe is not None else [])

    def load(text):  # as the metadata's "Load the recipe into the Merge tab" does, and the box is then used
        if not text or not text.strip():
            return (update(), "No recipe: explain a merge first.") + ((update(),) if use_recipe is not None else ())
        message = "Loaded into the Merge tab's recipe box; Merge there makes the fitted merge."
        return (text, message) + ((True,) if use_recipe is not None else ())

    parts["ex_load"].click(load, [parts["ex_recipe"]], outputs)
