"""The Optimize tab in the WebUI double: a template from the Merge tab's settings, the space table from
the template, a study started and watched to its end, its chart, table and best images, Apply best."""

from __future__ import annotations

import os

import torch
from helpers import load, table_rows
from test_optimize import BRIGHT
from test_ui import by_elem_id, handler, labels, last

from lib_merge.engine.live import model_tensors
from lib_merge.ui.app import TAB_LABELS, build_ui


def test_a_study_from_the_tab(webui, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "scorers").mkdir(parents=True)
    (home / "scorers" / "bright.py").write_text(BRIGHT)
    monkeypatch.setenv("ALLOY_HOME", str(home))
    demo = build_ui(webui.workbench)
    assert labels(demo) == list(TAB_LABELS) and TAB_LABELS[-1] == "Optimize" and len(TAB_LABELS) == 10

    # The Merge tab's settings (A, B, weighted sum) as a template with alpha opened.
    from_merge, inputs = handler(demo, "alloy_opt_from_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    values[ids.index("alloy_opt_open")] = "alpha"
    values[ids.index("alloy_model_a")] = webui.title("model_a")
    values[ids.index("alloy_model_b")] = webui.title("model_b")
    template, note = from_merge(*values)
    assert 'alpha=param("alpha")' in template and "weighted_sum(" in template, (template, note)
    fill, _ = handler(demo, "alloy_opt_fill_space")
    import pandas as pd

    rows, _ = fill(template, pd.DataFrame([["old", 0, 1, "", "", "", ""]]))  # Gradio hands a frame
    assert rows == [["alpha", 0, 1, "", "", "", ""]]

    start, inputs = handler(demo, "alloy_opt_start")
    ids = [c.elem_id for c in inputs]
    space = pd.DataFrame([["alpha", "0.2", "0.8", "", "", "", ""]])
    given = {"alloy_opt_study": "tab", "alloy_opt_recipe": template, "alloy_opt_space": space,
             "alloy_opt_sampler": "random", "alloy_opt_trials": 3, "alloy_opt_seed": 1,
             "alloy_opt_scorer": ["plugin:bright"], "alloy_opt_prompts": "a cat", "alloy_opt_seeds": "1",
             "alloy_opt_holdout": "7", "alloy_opt_steps": 2, "alloy_opt_width": 64, "alloy_opt_height": 64}  # fmt: skip
    values = [given.get(i, c.value) for i, c in zip(ids, inputs, strict=True)]
    status, chart, importance, gallery, table = last(start(*values))
    assert "**tab**: done" in status and "Held-out seeds, plugin:bright" in status, status
    table, importance = table_rows(table), table_rows(importance, ["input", "importance"])
    assert len(table) == 3 and all(row[1] == "COMPLETE" for row in table)
    assert all(0.2 <= float(row[3].split(": ")[1].rstrip("}")) <= 0.8 for row in table)
    assert chart and os.path.getsize(chart) > 0 and len(gallery) == 3
    assert [name for name, _ in importance] == ["alpha"]

    apply, _ = handler(demo, "alloy_opt_apply")
    assert apply("tab").startswith("Merged"), apply("tab")
    a = load(webui.folder / "model_a.safetensors")
    live = model_tensors(webui.model)
    assert not all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in a.items())  # the best merge is live
    save, _ = handler(demo, "alloy_opt_save")
    saved = save("tab", "best_of_tab")
    assert saved.startswith("Saved") and (webui.folder / "best_of_tab.safetensors").is_file(), saved
    refused = last(start(*[given.get(i, c.value) if i != "alloy_opt_trials" else 0 for i, c in
                           zip(ids, inputs, strict=True)]))[0]  # fmt: skip
    assert refused.startswith("**Error:**") and "trials" in refused
    assert by_elem_id(demo, "alloy_opt_stop")
