"""Tabs are objects (build, wire) over one shared Page: a new tab is one file and one entry in TABS, and it
can use the other tabs' components and join the page-wide model lists."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import gradio as gr
from test_ui import by_elem_id, handler, labels

from lib_merge.app.workbench import Workbench
from lib_merge.host.folder import FolderHost
from lib_merge.ui import app
from lib_merge.ui.tabs import Page

ROOT = Path(__file__).resolve().parents[1]


class CountTab:
    """A tab as a plugin author would write it: its own dropdown of checkpoints, and a button that reads
    model A from the Merge tab."""

    key, label = "count", "Count"

    def build(self, page: Page) -> None:
        parts = page.parts[self.key] = {
            "pick": gr.Dropdown([], label="A checkpoint", elem_id="alloy_count_pick"),
            "go": gr.Button("Count", elem_id="alloy_count_go"),
            "out": gr.Textbox(elem_id="alloy_count_out"),
        }
        page.checkpoint_lists.append(parts["pick"])

    def wire(self, page: Page) -> None:
        parts = page.parts[self.key]
        parts["go"].click(lambda a, b: f"{a} and {b}", [page.widgets["model_a"], parts["pick"]], [parts["out"]])


def test_a_new_tab_is_one_entry(tmp_path, sd1, monkeypatch):
    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    monkeypatch.setattr(app, "TABS", (*app.TABS, CountTab()))
    demo = build_ui_with_tabs(tmp_path)
    assert labels(demo)[-1] == "Count" and by_elem_id(demo, "alloy_tab_count")
    fn, inputs = handler(demo, "alloy_count_go")
    assert [c.elem_id for c in inputs] == ["alloy_model_a", "alloy_count_pick"]
    assert fn(sd1[0].name, sd1[1].name) == f"{sd1[0].name} and {sd1[1].name}"
    # The page-wide lists: the page load fills the new dropdown with the folder's checkpoints, as the others.
    pick = by_elem_id(demo, "alloy_count_pick")
    loads = [f for f in _load_functions(demo) if pick._id in f[1]]
    assert loads, "the new tab's dropdown is not among the lists read on page load"
    fresh, outputs = loads[0]
    choices = fresh()[outputs.index(pick._id)]
    assert {sd1[0].name, sd1[1].name} <= {c[0] if isinstance(c, (list, tuple)) else c for c in choices["choices"]}


def build_ui_with_tabs(folder: Path):
    return app.build_ui(Workbench(FolderHost(str(folder))))


def _load_functions(demo) -> list[tuple]:
    """(function, output ids) of the page-load events."""
    found = []
    if isinstance(demo.fns, dict):  # Gradio 4
        for fn in demo.fns.values():
            if any(t[1] == "load" for t in fn.targets):
                found.append((fn.fn, [o._id for o in fn.outputs]))
    else:  # Gradio 3
        for index, dep in enumerate(demo.dependencies):
            if dep.get("trigger") == "load" or "load" in [t[1] for t in dep.get("targets", []) if isinstance(t, list)]:
                found.append((demo.fns[index].fn, list(dep["outputs"])))
    return found


def test_the_page_only_assembles_tabs():
    """ui/app.py builds and wires tabs and the lists; no tab's events live there (the Merge tab's are in
    ui/merge_events.py)."""
    tree = ast.parse((ROOT / "lib_merge" / "ui" / "app.py").read_text())
    events = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and n.func.attr in ("click", "then", "submit", "select", "upload")]  # fmt: skip
    assert events == []
    assert [tab.key for tab in app.TABS][:2] == ["merge", "mbw"] and len({t.key for t in app.TABS}) == len(app.TABS)
