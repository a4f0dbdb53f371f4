"""Analysis tab: how alike two models are (table, heatmap, bar chart, CSV), the elements of one model, its metadata
(with the Alloy recipe: load it into the Merge tab, verify its hash), and what a PNG says of its merge."""

from __future__ import annotations

import re

import gradio as gr

from lib_merge.analysis.report import block_rows
from lib_merge.app.lora import lora_names
from lib_merge.app.toolkit import (
    ELEMENT_COLUMNS,
    LORA_ELEMENT_COLUMNS,
    analyze,
    elements,
    lora_elements,
    metadata_view,
    table_csv,
    verify_recipe_hash,
)
from lib_merge.app.workbench import Workbench
from lib_merge.ui import explain_section
from lib_merge.ui.compat import table, update
from lib_merge.ui.jobs import error_text, run_in_thread
from lib_merge.ui.tabs import Page

BLOCK_COLUMNS = ["block", "keys", "cosine mean %", "cosine min %", "cosine weighted %", "attention %"]
_HISTORY_ID = re.compile(r"Alloy history:\s*(\d+)")
_RECIPE_HASH = re.compile(r"Alloy recipe:\s*([0-9a-f]+)")


def build(workbench: Workbench) -> dict:
    titles = workbench.host.checkpoint_titles()
    parts: dict = {}
    with gr.Accordion("Similarity of two models", open=True):
        with gr.Row():
            parts["a"] = gr.Dropdown(titles, label="A", elem_id="alloy_an_a")
            parts["b"] = gr.Dropdown(titles, label="B", elem_id="alloy_an_b")
            parts["attention"] = gr.Checkbox(label="Attention similarity", value=True, elem_id="alloy_an_attention")
            parts["run"] = gr.Button("Analyze", variant="primary", elem_id="alloy_an_run")
        parts["status"] = gr.Markdown("", elem_id="alloy_an_status")
        parts["table"] = gr.Dataframe(headers=BLOCK_COLUMNS, interactive=False, elem_id="alloy_an_table")
        with gr.Row():
            # no label badge: it would cover the pictures' own titles
            parts["heatmap"] = gr.Image(label="Heatmap", show_label=False, type="filepath", interactive=False,
                                        elem_id="alloy_an_heatmap")  # fmt: skip
            parts["chart"] = gr.Image(label="Distance from identical per block", show_label=False, type="filepath",
                                      interactive=False, elem_id="alloy_an_chart")  # fmt: skip
        parts["csv"] = gr.File(label="Every key (CSV)", interactive=False, elem_id="alloy_an_csv")
    with gr.Accordion("Elements of one model", open=False):
        with gr.Row():
            parts["el_model"] = gr.Dropdown(titles, label="Model", elem_id="alloy_an_el_model")
            parts["el_filter"] = gr.Textbox(label="Filter (part of a key, or a block such as IN04)",
                                            elem_id="alloy_an_el_filter")  # fmt: skip
            parts["el_run"] = gr.Button("List", elem_id="alloy_an_el_run")
        parts["el_table"] = gr.Dataframe(headers=ELEMENT_COLUMNS, interactive=False, elem_id="alloy_an_el_table")
        parts["el_csv"] = gr.File(label="The listed rows (CSV)", interactive=False, elem_id="alloy_an_el_csv")
        with gr.Row():
            parts["el_lora"] = gr.Dropdown(lora_names(workbench.host.lora_folder()), label="or a LoRA",
                                           elem_id="alloy_an_el_lora")  # fmt: skip
            parts["el_lora_run"] = gr.Button("List its modules", elem_id="alloy_an_el_lora_run")
        parts["el_lora_table"] = gr.Dataframe(headers=LORA_ELEMENT_COLUMNS, interactive=False,
                                              elem_id="alloy_an_el_lora_table")  # fmt: skip
        parts["el_lora_csv"] = gr.File(label="The listed modules (CSV)", interactive=False,
                                       elem_id="alloy_an_el_lora_csv")  # fmt: skip
    with gr.Accordion("Metadata", open=False):
        with gr.Row():
            parts["md_model"] = gr.Dropdown(titles, label="Model", elem_id="alloy_an_md_model")
            parts["md_run"] = gr.Button("Show", elem_id="alloy_an_md_run")
            parts["md_verify"] = gr.Button("Verify the recipe's hash", elem_id="alloy_an_md_verify")
            parts["md_load"] = gr.Button("Load the recipe into the Merge tab", elem_id="alloy_an_md_load")
        parts["md_status"] = gr.Markdown("", elem_id="alloy_an_md_status")
        parts["md_recipe"] = gr.Textbox(label="Alloy recipe", lines=6, elem_id="alloy_an_md_recipe")
        parts["md_hash"] = gr.Textbox(label="alloy_recipe_hash", elem_id="alloy_an_md_hash")
        parts["md_json"] = gr.Code(label="Metadata", language="json", elem_id="alloy_an_md_json")
    with gr.Accordion("Load from image", open=False):
        with gr.Row():
            parts["png"] = gr.Image(label="A PNG made after an Alloy merge", type="pil", elem_id="alloy_an_png")
            parts["png_info"] = gr.Markdown("", elem_id="alloy_an_png_info")
    parts.update(explain_section.build(titles))
    return parts


def wire(workbench: Workbench, parts: dict, merge_recipe, history_id, use_recipe=None) -> None:
    """`merge_recipe` is the Merge tab's recipe box, `history_id` the History tab's id box, `use_recipe` the
    Merge tab's "Merge runs this recipe text" checkbox (ticked when a fitted recipe is loaded)."""
    host = workbench.host

    def run(a, b, attention):
        if not a or not b:
            yield "**Error:** choose models A and B", update(), update(), update(), update()
            return
        job = lambda: workbench.file_job("analysis", lambda step: analyze(a, b, bool(attention), host, step))  # noqa: E731
        for kind, value in run_in_thread(job, workbench.progress.text):
            if kind == "done":
                result = value.result
                note = f" ({result.skipped} keys not in both)" if result.skipped else ""
                text = f"{result.a} vs {result.b}: {len(result.keys):,} keys compared{note}."
                yield text, block_rows(result), value.heatmap_path, value.chart_path, value.csv_path
            else:
                yield value, update(), update(), update(), update()

    parts["run"].click(run, [parts["a"], parts["b"], parts["attention"]],
                       [parts["status"], parts["table"], parts["heatmap"], parts["chart"], parts["csv"]])  # fmt: skip

    def table_of(make, columns: list[str], suffix: str):
        """A table callback: rows for a chosen name and their CSV, or one row carrying the error."""

        def fill(name, needle):
            if not name:
                return update(), update()
            try:
                rows = make(name, host, needle or "")
                return table(columns, rows), table_csv(columns, rows, f"{name}-{suffix}")
            except Exception as e:  # noqa: BLE001
                return table(columns, [[error_text(e)] + [""] * (len(columns) - 1)]), update()

        return fill

    parts["el_run"].click(table_of(elements, ELEMENT_COLUMNS, "elements"), [parts["el_model"], parts["el_filter"]],
                          [parts["el_table"], parts["el_csv"]])  # fmt: skip
    parts["el_lora_run"].click(table_of(lora_elements, LORA_ELEMENT_COLUMNS, "modules"),
                               [parts["el_lora"], parts["el_filter"]],
                               [parts["el_lora_table"], parts["el_lora_csv"]])  # fmt: skip

    def show(model):
        if not model:
            return "**Error:** choose a model", update(), update(), update()
        try:
            view = metadata_view(model, host)
        except Exception as e:  # noqa: BLE001
            return error_text(e), update(), update(), update()
        note = "" if view.recipe else "This file carries no Alloy recipe."
        return note, view.recipe, view.recipe_hash, view.text

    parts["md_run"].click(show, [parts["md_model"]],
                          [parts["md_status"], parts["md_recipe"], parts["md_hash"], parts["md_json"]])  # fmt: skip

    def verify(recipe, expected):
        try:
            return verify_recipe_hash(recipe or "", (expected or "").strip())
        except Exception as e:  # noqa: BLE001
            return error_text(e)

    parts["md_verify"].click(verify, [parts["md_recipe"], parts["md_hash"]], [parts["md_status"]])
    if merge_recipe is not None:
        parts["md_load"].click(lambda text: (text, "Loaded into the Merge tab's recipe box." if text else "No recipe."),
                               [parts["md_recipe"]], [merge_recipe, parts["md_status"]])  # fmt: skip

    def from_image(image):
        if image is None:
            return "", update()
        text = _infotext(image)
        found = _HISTORY_ID.search(text)
        recipe = _RECIPE_HASH.search(text)
        if not found:
            return "No `Alloy history` in this image's infotext.", update()
        hash_note = f", recipe hash {recipe.group(1)}" if recipe else ""
        row = int(found.group(1))
        return f"History id **{row}**{hash_note}: its settings load from the History tab.", row

    if history_id is not None:
        parts["png"].change(from_image, [parts["png"]], [parts["png_info"], history_id])
    else:
        parts["png"].change(lambda image: from_image(image)[0], [parts["png"]], [parts["png_info"]])
    explain_section.wire(workbench, parts, merge_recipe, use_recipe)


def _infotext(image) -> str:
    info = getattr(image, "info", {}) or {}
    return str(info.get("parameters") or info.get("Comment") or "")


# The tab's checkpoint dropdowns (its explain section's among them).
CHECKPOINT_LISTS = ("a", "b", "el_model", "md_model", "ex_m", "ex_a", "ex_b", "ex_c")


class AnalysisTab:
    key, label = "analysis", "Analysis"

    def build(self, page: Page) -> None:
        parts = page.parts[self.key] = build(page.workbench)
        page.checkpoint_lists.extend(parts[n] for n in CHECKPOINT_LISTS if n in parts)
        page.lora_lists.append(parts["el_lora"])

    def wire(self, page: Page) -> None:
        """A fitted recipe goes to the Merge tab's recipe box; a history id from an image to the History tab."""
        history_id = page.parts["history"].get("id")
        wire(
            page.workbench, page.parts[self.key], page.widgets.get("recipe"), history_id, page.widgets.get("use_recipe")
        )
