"""The tabs' model lists are read when a page loads and after every job that writes a file, so a merge saved
since the server started is offered without pressing Refresh (Gradio 3.41 and 4.x)."""

from __future__ import annotations

import shutil

from test_ui import by_elem_id

from lib_merge.app.workbench import Workbench
from lib_merge.host.folder import FolderHost
from lib_merge.ui.app import build_ui

CHECKPOINT_LISTS = ("alloy_model_a", "alloy_model_b", "alloy_model_c", "alloy_tk_model", "alloy_an_a", "alloy_ex_m")


def _events(demo):
    """(trigger, after, fn, outputs) of every event: trigger "load", "click", "then", …; `after` is the index of
    the event a "then" follows."""
    if isinstance(demo.fns, dict):  # Gradio 4
        for fn in demo.fns.values():
            triggers = [t[1] for t in fn.targets] or ["then"]
            yield triggers[0], fn.trigger_after, fn.fn, list(fn.outputs)
    else:  # Gradio 3
        for index, dep in enumerate(demo.dependencies):
            yield dep["trigger"], dep.get("trigger_after"), demo.fns[index].fn, [demo.blocks[i] for i in dep["outputs"]]


def _choices(update) -> list[str]:
    choices = update["choices"] if isinstance(update, dict) else update.choices
    return [c[0] if isinstance(c, (list, tuple)) else c for c in choices]


def test_a_page_load_lists_the_files_saved_since_the_server_started(tmp_path, sd1):
    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    shutil.copy(sd1[2], tmp_path / "saved_later.safetensors")  # a merge saved after the page was built
    (lora_dir / "style.safetensors").write_bytes((tmp_path / "saved_later.safetensors").read_bytes()[:0])

    loads = [(fn, outputs) for trigger, _, fn, outputs in _events(demo) if trigger == "load" and len(outputs) > 1]
    assert len(loads) == 1, "one load event reads every list (another sets Model A alone)"
    fn, outputs = loads[0]
    updates = dict(zip([id(o) for o in outputs], fn(), strict=True))
    for elem_id in CHECKPOINT_LISTS:
        assert "saved_later.safetensors" in _choices(updates[id(by_elem_id(demo, elem_id))]), elem_id
    assert "style" in _choices(updates[id(by_elem_id(demo, "alloy_lora_pick"))])


def test_every_job_that_writes_a_file_reads_the_lists_again(tmp_path, sd1):
    shutil.copy(sd1[0], tmp_path / sd1[0].name)
    demo = build_ui(Workbench(FolderHost(str(tmp_path))))
    events = list(_events(demo))
    fresh = next(fn for trigger, _, fn, outputs in events if trigger == "load" and len(outputs) > 1)
    followed = {after for trigger, after, fn, _ in events if trigger == "then" and fn is fresh}
    writers = {"alloy_merge", "alloy_save_current", "alloy_tk_prune", "alloy_tk_convert", "alloy_lora_extract"}
    ids = {by_elem_id(demo, e)._id: e for e in writers}
    if isinstance(demo.fns, dict):
        clicked = {i: fn.targets[0][0] for i, fn in enumerate(demo.fns.values()) if fn.targets}
    else:
        clicked = {i: dep["targets"][0] for i, dep in enumerate(demo.dependencies) if dep["trigger"] == "click"}
    assert {ids[clicked[i]] for i in followed if clicked.get(i) in ids} == writers
