"""History tab: the newest rows, search over all rows, and loading a row's settings or recipe."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from lib_merge.app.history import find_row, read_history, search_history
from lib_merge.ui.compat import table, update
from lib_merge.ui.jobs import error_text
from lib_merge.ui.tabs import Page
from lib_merge.ui.values import restore_values

HEADERS = ["id", "time", "name", "recipe hash", "models", "output"]
PAGE_SIZES = ["20", "50", "100", "all"]


def build(default_import: str = "", history_file: Path | None = None) -> dict:
    """The tab's widgets; the table starts with the newest rows of `history_file`."""
    c: dict = {}
    with gr.Row():
        c["query"] = gr.Textbox(
            label='Search (words, "phrases", id:12, hash:1a2b)', elem_id="alloy_history_query", scale=4
        )
        c["any_word"] = gr.Radio(["and", "or"], value="and", label="Match", elem_id="alloy_history_match")
        c["page"] = gr.Dropdown(PAGE_SIZES, value="50", label="Rows", elem_id="alloy_history_page")
        c["search"] = gr.Button("Search", elem_id="alloy_history_search")
    c["table"] = gr.Dataframe(
        headers=HEADERS,
        value=table(HEADERS, newest_rows(history_file) if history_file else []),
        interactive=False,
        wrap=True,
        elem_id="alloy_history_table",
    )
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


def newest_rows(history_file: Path, page: str = "50") -> list[list]:
    """The newest rows as the table shows them; a history that cannot be read shows none (Search says why)."""
    try:
        return table_rows(read_history(history_file).rows, page)
    except Exception:  # noqa: BLE001 - the table stays empty; the message comes with the next search
        return []


def wire(workbench, form, history: dict, recipe) -> None:
    """Search, load and import; opening the tab lists the newest rows (merges made since the page loaded too)."""
    inputs = form.components()
    host = workbench.host

    def search(query, match, page):
        try:
            log_ = read_history(workbench.history_path())
            rows = search_history(log_.rows, query or "", match == "or")
            shown = table(HEADERS, table_rows(rows, page))
            note = f"{len(rows)} of {len(log_.rows)} rows match." + "".join(f" {s}." for s in log_.skipped[:3])
            return shown, note
        except Exception as e:  # noqa: BLE001
            return update(), error_text(e)

    search_inputs = [history["query"], history["any_word"], history["page"]]
    history["search"].click(search, search_inputs, [history["table"], history["message"]])
    history["query"].submit(search, search_inputs, [history["table"], history["message"]])

    def load_settings(ident):
        try:
            row = find_row(read_history(workbench.history_path()).rows, int(ident or 0))
        except Exception as e:  # noqa: BLE001
            return [update() for _ in inputs] + [error_text(e)]
        values, notes = restore_values(row.settings, row.models, host.checkpoint_titles())
        if row.settings.get("recipe_edited"):
            values.update(recipe=row.recipe, use_recipe=True)
        message = f"Loaded the settings of history id {row.id} ({row.name})." + "".join(f" {n}." for n in notes)
        return form.updates(values) + [message]

    history["load_settings"].click(load_settings, [history["id"]], inputs + [history["message"]])

    def import_supermerger(path):
        try:
            return workbench.import_supermerger_history(path)
        except Exception as e:  # noqa: BLE001
            return error_text(e)

    history["import"].click(import_supermerger, [history["import_path"]], [history["message"]])

    def load_recipe(ident):
        try:
            row = find_row(read_history(workbench.history_path()).rows, int(ident or 0))
        except Exception as e:  # noqa: BLE001
            return update(), update(), error_text(e)
        return row.recipe, True, f"Recipe of history id {row.id} loaded into the Merge tab's recipe box."

    history["load_recipe"].click(load_recipe, [history["id"]], [recipe, form.widgets["use_recipe"], history["message"]])

    history["page_tab"].select(search, search_inputs, [history["table"], history["message"]])


class HistoryTab:
    key, label = "history", "History"

    def build(self, page: Page) -> None:
        workbench = page.workbench
        parts = page.parts[self.key] = build(workbench.supermerger_history(), workbench.history_path())
        parts["page_tab"] = page.tab_pages[self.key]  # opening the tab lists the newest rows

    def wire(self, page: Page) -> None:
        wire(page.workbench, page.form, page.parts[self.key], page.widgets["recipe"])
