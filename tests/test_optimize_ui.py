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
    status, chart, importance, gallery, table, pair_info, *_ = last(start(*values))
    assert pair_info.startswith("No pair to judge") and 'not by "human"' in pair_info
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


def test_a_person_chooses_in_the_tab(webui, tmp_path, monkeypatch):
    """Scorer "human": the tab shows each new trial beside the best, blind; the choice buttons answer outside
    the queue (the study's own event holds it) and show the next pair; a stale pair is refused in one line."""
    import time

    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    demo = build_ui(webui.workbench)
    a, b = webui.title("model_a"), webui.title("model_b")
    recipe = f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nmerged = weighted_sum(A, B, alpha=param("alpha"))\n'
    import pandas as pd

    start, inputs = handler(demo, "alloy_opt_start")
    given = {"alloy_opt_study": "eye", "alloy_opt_recipe": recipe, "alloy_opt_sampler": "tpe",
             "alloy_opt_space": pd.DataFrame([["alpha", "0", "1", "", "", "", ""]]), "alloy_opt_trials": 4,
             "alloy_opt_scorer": ["human"], "alloy_opt_prompts": "a cat", "alloy_opt_seeds": "1, 2",
             "alloy_opt_holdout": "", "alloy_opt_steps": 2, "alloy_opt_width": 64, "alloy_opt_height": 64}  # fmt: skip
    running = start(*[given.get(c.elem_id, c.value) for c in inputs])
    assert "**eye**: running" in next(running)[0]
    refresh, _ = handler(demo, "alloy_opt_refresh")
    left_button = next(d for d in demo.config["dependencies"] if by_elem_id(demo, "alloy_opt_choose_left")._id
                       in [t[0] if isinstance(t, (list, tuple)) else t for t in d["targets"]])  # fmt: skip
    assert left_button["queue"] is False
    choose, _ = handler(demo, "alloy_opt_choose_left")
    answered, deadline = [], time.monotonic() + 120
    while "**eye**: running" in refresh("eye")[0]:
        info, left, right, pair_id = refresh("eye")[-4:]
        if pair_id:
            assert info.startswith("Which merge is better") and "alpha" not in info  # blind: no parameters
            assert len(left) == len(right) == 2 and all(os.path.isfile(p) for p in left + right)
            choose("eye", pair_id)
            answered.append(pair_id)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status = refresh("eye")[0]
    assert "**eye**: done" in status and len(answered) == 3
    # The newer trial won every pair: the last trial is the best.
    assert "(trial 3)" in status, status
    stale = choose("eye", answered[0])[0]
    assert "answered already" in stale
