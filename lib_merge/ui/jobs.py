"""Long jobs behind a Gradio callback: run in a thread, report progress, turn errors into text."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from lib_merge.errors import AlloyError, message_for

log = logging.getLogger("alloy")


def error_text(e: BaseException) -> str:
    if isinstance(e, AlloyError):
        return f"**Error:** {message_for(e, 'ui')}"
    log.exception("Alloy: unexpected error")
    return f"**Error:** {type(e).__name__}: {e}"


def run_in_thread(fn: Callable[[], object], progress: Callable[[], str]) -> Iterator[tuple[str, object]]:
    """Yields ("progress", progress()) while fn runs, then ("done", value) or ("error", message)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the user
            box["error"] = e

    thread = threading.Thread(target=target, name="alloy-job", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        if thread.is_alive():
            yield "progress", progress()
    if "error" in box:
        yield "error", error_text(box["error"])
    else:
        yield "done", box["value"]
