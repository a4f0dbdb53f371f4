"""A merge binds its recipe once and never parses text it printed itself (counted with spies)."""

from __future__ import annotations

import collections

import pytest
import torch
from helpers import load, metadata

from lib_merge.app.plots.plan import XYZPlan
from lib_merge.app.plots.runner import run_plot
from lib_merge.app.requests import MergeRequest, SaveRequest
from lib_merge.engine import bind
from lib_merge.engine.live import model_tensors
from lib_merge.io import source
from lib_merge.recipe import parse
from lib_merge.recipe.form import MergeSettings, MethodSettings


@pytest.fixture
def counts(monkeypatch):
    """Counts binds (BoundRecipe made), model files opened and recipe texts parsed."""
    seen: collections.Counter = collections.Counter()

    def spy(owner, name, label):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            seen[label] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    spy(bind.BoundRecipe, "__init__", "binds")
    spy(source.SourceModel, "__init__", "opens")
    spy(parse, "_syntax_tree", "parses")
    return seen


def test_merge_with_save_after_binds_once_and_parses_nothing(webui, counts):
    settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), alpha=0.3)
    outcome = webui.workbench.merge(MergeRequest(settings=settings, save=SaveRequest(dtype="fp32")))
    assert dict(counts) == {"binds": 1, "opens": 2}
    assert outcome.path and outcome.recipe.text == outcome.recipe_text
    # the file is the live merge: the same bits once rounded to the loaded model's dtype
    live = model_tensors(webui.model)
    saved = load(outcome.path)
    assert all(torch.equal(live[k], t.to(live[k].dtype)) for k, t in saved.items())
    assert metadata(outcome.path)["alloy_recipe_hash"] == outcome.recipe_hash
    counts.clear()
    again = webui.workbench.save_current(SaveRequest(name="again", dtype="fp32"))
    assert counts["parses"] == 0 and counts["binds"] == 1  # the live merge's node, opened again
    assert load(again).keys() == saved.keys()


def test_a_method_form_is_built_not_printed_and_parsed(webui, counts):
    form = MethodSettings(webui.title("model_a"), [webui.title("model_b")], "task_arithmetic", {"alpha": 0.5})
    outcome = webui.workbench.merge(MergeRequest(settings=form))
    assert counts["parses"] == 0 and counts["binds"] == 1
    assert "task_arithmetic(" in outcome.recipe_text


def test_a_two_by_two_plot_binds_once_per_merge(webui, counts, tmp_path):
    webui.shared.opts.data["outdir_grids"] = str(tmp_path / "grids")
    plan = XYZPlan.from_dict(
        {
            "x": {"type": "seed", "values": "1, 2"},
            "y": {"type": "alpha", "values": "0.2, 0.8"},
            "merge": {"a": webui.title("model_a"), "b": webui.title("model_b")},
            "gen": {"steps": 2, "width": 64, "height": 64, "prompt": "a cat"},
        }
    )
    out = run_plot(webui.workbench, plan)
    assert out.merges == 2 and len(out.results) == 4
    # one bind (two files opened) per merge, and model A's header read once for the plan's block schema
    assert dict(counts) == {"binds": 2, "opens": 5}
    counts.clear()
    again = run_plot(webui.workbench, XYZPlan.from_dict({**plan.to_dict(), "y": {"type": "alpha", "values": "0.8"}}))
    assert again.merges == 0 and counts["parses"] == 0  # the live model is this merge already
