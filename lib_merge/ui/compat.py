"""The few places where Gradio 3.41 (A1111) and 4.x (Forge, standalone) differ, in one module.

Everything else in ui/ uses only what both versions have: gr.update(), constructor keyword
arguments present in both, Blocks/Tab/Row/Column/Accordion, .click/.change/.then.
"""

from __future__ import annotations

import gradio as gr

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def update(**kwargs):
    """gr.update exists in both; Component.update does not in 4.x."""
    return gr.update(**kwargs)


def enable_queue(demo: gr.Blocks) -> gr.Blocks:
    """One job at a time: there is one live model (and generators need the queue on 3.x)."""
    if GRADIO_MAJOR >= 4:
        return demo.queue(default_concurrency_limit=1)
    return demo.queue(concurrency_count=1)


def dataframe_rows(value) -> list[list]:
    """A Dataframe's value as rows: 3.x may hand a pandas frame or a dict, 4.x a pandas frame."""
    if value is None:
        return []
    if hasattr(value, "values") and hasattr(value, "columns"):
        return value.values.tolist()
    if isinstance(value, dict):
        return value.get("data", [])
    return list(value)


def mount(app, demo: gr.Blocks, path: str = "/"):
    """The Gradio app inside a FastAPI app (so the standalone app can carry the HTTP API)."""
    return gr.mount_gradio_app(app, demo, path=path)


def internal_token(demo: gr.Blocks) -> str | None:
    """The bearer token Gradio 3's queue sends when it calls the app's own /api/predict (None on 4.x)."""
    return getattr(getattr(demo, "_queue", None), "access_token", None)


def table(headers: list[str], rows: list[list]) -> dict:
    """A Dataframe's value with its headers: Gradio 3.41 shows an empty list of rows under the headers
    1, 2, … instead of the table's own; the headers and rows together show right in 3.41 and 4."""
    return {"headers": list(headers), "data": rows}
