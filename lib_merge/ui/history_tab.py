"""History tab: the newest rows, search over all rows, and loading a row's settings or recipe."""

from __future__ import annotations

import gradio as gr

HEADERS = ["id", "time", "name", "recipe hash", "models", "output"]
PAGE_SIZES = ["20", "50", "100", "all"]


def build(default_import: str = "") -> dict:
    c: dict = {}
    with gr.Row():
        c["query"] = gr.Textbox(
            label='Search (words, "phrases", id:12, hash:1a2b)', elem_id="alloy_history_query", scale=4
        )
        c["any_word"] = gr.Radio(["and", "or"], value="and", label="Match", elem_id="alloy_history_match")
        c["page"] = gr.Dropdown(PAGE_SIZES, value="50", label="Rows", elem_id="alloy_history_page")
        c["search"] = gr.Button("Search", elem_id="alloy_history_search")
    c["table"] = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="alloy_history_table")
    with gr.Row():
        c["id"] = gr.Number(label="History id (-1 = last)", value=-1, precision=0, elem_id="alloy_history_id")
        c["load_settings"] = gr.Button("Load settings from id", elem_id="alloy_history_load")
        c["load_recipe"] = gr.Button("Load recipe", elem_id="alloy_history_recipe")
    with gr.Row():
        c["import_path"] = gr.Textbox(
            value=default_import, label="SuperMerger's mergehistory.csv", elem_id="alloy_history_import_path", scale=4
        )
        c["import"] = gr.Button("Import SuperMerger history", elem_id="alloy_history_import")
    c["message"] = gr.Markdown("", elem_id="alloy_history_message")
    return c


def table_rows(rows, page: str) -> list[list]:
    """Newest first; the page size limits only what is shown, never what is searched."""
    newest = list(reversed(rows))
    if page != "all":
        newest = newest[: int(page)]
    return [[r.id, r.time, r.name, r.recipe_hash[:10], r.models, r.output] for r in newest]
