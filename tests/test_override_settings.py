"""API clients that send `override_settings: {"sd_model_checkpoint": …}` with every txt2img while a merge is live
(the WebUI double runs v1.10.1's override order: load the named checkpoint, run, write the options back).

The run gets the checkpoint it named; afterwards, with override_settings_restore_afterwards (the default), the
merge is live again and named, as the options the WebUI writes back say; without it, model A stays."""

from __future__ import annotations

import pytest

from lib_merge.app.requests import MergeRequest
from lib_merge.recipe.form import MergeSettings


class _AlloyScript:
    """What scripts/alloy.py's always-on script does at the start and the end of a run."""

    def __init__(self, workbench):
        self.workbench = workbench

    def before_process(self, p, *args):
        self.workbench.host.before_process(p, self.workbench)

    def postprocess(self, p, processed, *args):
        self.workbench.host.after_process(p, self.workbench)


def _txt2img(webui, overrides: dict | None = None, restore: bool = True):
    from modules import scripts

    p = webui.processing.StableDiffusionProcessingTxt2Img(
        prompt="a fox", negative_prompt="", steps=3, sampler_name="Euler", seed=7, width=64, height=64,
        batch_size=1, n_iter=1, cfg_scale=7.0, subseed=-1, subseed_strength=0.0,
        override_settings=dict(overrides or {}), override_settings_restore_afterwards=restore,
    )  # fmt: skip
    p.is_api = True
    runner = scripts.ScriptRunner()
    runner.alwayson_scripts = [_AlloyScript(webui.workbench)]
    p.scripts = runner
    return webui.processing.process_images(p).images[0].tobytes()


@pytest.fixture
def merged(webui):
    settings = MergeSettings(a=webui.title("model_a"), b=webui.title("model_b"), alpha=0.3)
    outcome = webui.workbench.merge(MergeRequest(settings=settings))
    return outcome


def test_the_merge_is_live_and_named_again_after_a_run_that_overrode_the_checkpoint(webui, merged):
    a_title = webui.title("model_a")
    merge_title = webui.shared.opts.data["sd_model_checkpoint"]
    merged_image = _txt2img(webui)
    weights = webui.processing.weights_digest(webui.model)

    image = _txt2img(webui, {"sd_model_checkpoint": a_title})

    assert webui.shared.opts.data["sd_model_checkpoint"] == merge_title
    assert webui.workbench.live is not None and webui.workbench.live.name == merged.name
    assert webui.workbench.live.history_id == merged.history_id
    assert webui.processing.weights_digest(webui.model) == weights  # the merge's bits, not A's
    assert webui.sd_models.checkpoint_aliases.get(merge_title) is webui.model.sd_checkpoint_info
    assert _txt2img(webui) == merged_image
    webui.workbench.restore()
    assert image == _txt2img(webui)  # the overriding run was made with model A, as it asked
    assert image != merged_image


def test_without_restore_afterwards_the_named_checkpoint_stays_and_no_merge_is_claimed(webui, merged):
    a_title = webui.title("model_a")
    _txt2img(webui, {"sd_model_checkpoint": a_title}, restore=False)
    assert webui.shared.opts.data["sd_model_checkpoint"] == a_title
    assert webui.workbench.live is None
    assert "not patched" in webui.workbench.restore()
    a_weights = webui.processing.weights_digest(webui.model)
    webui.sd_models.reload_model_weights(forced_reload=True)
    assert webui.processing.weights_digest(webui.model) == a_weights


def test_an_override_naming_the_merge_itself_keeps_it_without_merging_again(webui, merged):
    merge_title = webui.shared.opts.data["sd_model_checkpoint"]
    backups = webui.workbench.backup
    image = _txt2img(webui)
    assert _txt2img(webui, {"sd_model_checkpoint": merge_title}) == image
    assert webui.workbench.backup is backups and webui.workbench.live.name == merged.name
    assert webui.shared.opts.data["sd_model_checkpoint"] == merge_title
