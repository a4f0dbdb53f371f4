"""API clients that send `override_settings: {"sd_model_checkpoint": …}` with every txt2img while a merge is live,
on both WebUI doubles: AUTOMATIC1111 v1.10.1's order (load the named checkpoint, run, write the options back by
attribute) and Forge's (set_config, forge_model_reload, run, set_config again, which refuses unknown names).

The run gets the checkpoint it named; afterwards, with override_settings_restore_afterwards (the default), the
merge is live again and named, as the options the WebUI writes back say; without it, the named checkpoint stays.
A run that fails after the load, the WebUI's own list refresh and a busy Alloy leave nothing inconsistent."""

from __future__ import annotations

import hashlib

import pytest
from forge_host import Forge

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


@pytest.fixture(params=["a1111", "forge"])
def ui(request, tmp_path, sd1):
    """The WebUI double of either host, model A loaded, Alloy connected."""
    if request.param == "a1111":
        yield request.getfixturevalue("webui")
        return
    forge = Forge(tmp_path, sd1)
    yield forge
    forge.close()


def _txt2img(ui, overrides: dict | None = None, restore: bool = True, prompt="a fox"):
    from modules import scripts

    p = ui.processing.StableDiffusionProcessingTxt2Img(
        prompt=prompt, negative_prompt="", steps=3, sampler_name="Euler", seed=7, width=64, height=64,
        batch_size=1, n_iter=1, cfg_scale=7.0, subseed=-1, subseed_strength=0.0,
        override_settings=dict(overrides or {}), override_settings_restore_afterwards=restore,
    )  # fmt: skip
    p.is_api = True
    runner = scripts.ScriptRunner()
    runner.alwayson_scripts = [_AlloyScript(ui.workbench)]
    p.scripts = runner
    return ui.processing.process_images(p).images[0].tobytes()


def _weights(ui) -> bytes:
    """Every weight of the loaded model, as values (Forge widens some to fp32 before each prompt)."""
    components = getattr(ui.processing, "components", None)
    module = components(ui.model) if components else ui.model
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.digest()


def _option(ui) -> str:
    return ui.shared.opts.data["sd_model_checkpoint"]


def _choose(ui, stem: str) -> None:
    """The user picks a checkpoint in the WebUI's dropdown."""
    if isinstance(ui, Forge):
        ui.choose(stem)
    else:
        ui.shared.opts.set("sd_model_checkpoint", ui.title(stem))


def _refresh_list(ui) -> list[str]:
    """The WebUI's own Refresh of the checkpoint list (Forge: also every page load); the dropdown's choices."""
    from modules import shared_items

    shared_items.refresh_checkpoints()
    return ui.sd_models.checkpoint_tiles(False)


@pytest.fixture
def merged(ui):
    settings = MergeSettings(a=ui.title("model_a"), b=ui.title("model_b"), alpha=0.3)
    return ui.workbench.merge(MergeRequest(settings=settings))


def _assert_merge_is_back(ui, merged, merge_option, weights) -> None:
    assert _option(ui) == merge_option
    assert ui.workbench.live is not None and ui.workbench.live.name == merged.name
    assert ui.workbench.live.history_id == merged.history_id
    assert _weights(ui) == weights  # the merge's bits, not A's
    assert ui.sd_models.checkpoint_aliases.get(merge_option) is ui.model.sd_checkpoint_info


@pytest.mark.parametrize("named", ["model_a", "model_c"])
def test_the_merge_is_live_and_named_again_after_a_run_that_overrode_the_checkpoint(ui, merged, named):
    merge_option = _option(ui)
    merged_image = _txt2img(ui)
    weights = _weights(ui)

    image = _txt2img(ui, {"sd_model_checkpoint": ui.title(named)})

    _assert_merge_is_back(ui, merged, merge_option, weights)
    assert _txt2img(ui) == merged_image
    ui.workbench.restore()
    if named == "model_a":
        assert image == _txt2img(ui)  # the overriding run was made with model A, as it asked
    assert image != merged_image


def test_without_restore_afterwards_the_named_checkpoint_stays_and_no_merge_is_claimed(ui, merged):
    a_title = ui.title("model_a")
    _txt2img(ui, {"sd_model_checkpoint": a_title}, restore=False)
    assert ui.sd_models.checkpoint_aliases.get(_option(ui)).filename.endswith("model_a.safetensors")
    assert ui.workbench.live is None
    assert "not patched" in ui.workbench.restore()
    assert merged.name not in " ".join(_refresh_list(ui))


def test_an_override_naming_the_merge_itself_keeps_it_without_merging_again(ui, merged):
    merge_option = _option(ui)
    backups = ui.workbench.backup
    image = _txt2img(ui)
    assert _txt2img(ui, {"sd_model_checkpoint": merge_option}) == image
    assert ui.workbench.backup is backups and ui.workbench.live.name == merged.name
    assert _option(ui) == merge_option


def test_the_webuis_own_list_refresh_keeps_the_merge_listed_and_shown_in_its_dropdown(ui, merged):
    merge_option = _option(ui)
    weights = _weights(ui)
    tiles = _refresh_list(ui)
    assert merge_option in tiles  # the dropdown shows the merge as the loaded model
    _txt2img(ui, {"sd_model_checkpoint": ui.title("model_a")})  # Forge: set_config finds the merge's name
    _assert_merge_is_back(ui, merged, merge_option, weights)


def test_a_run_that_fails_after_the_override_loaded_gets_the_merge_back_at_the_next_run(ui, merged):
    merge_option = _option(ui)
    merged_image = _txt2img(ui)
    weights = _weights(ui)
    with pytest.raises(RuntimeError, match="2 prompts for 1 images"):  # the run's own error, not Forge's
        _txt2img(ui, {"sd_model_checkpoint": ui.title("model_c")}, prompt=["a", "b"])
    assert _option(ui) == merge_option  # written back, and still a name the WebUI knows
    assert ui.sd_models.checkpoint_aliases.get(merge_option) is not None

    assert _txt2img(ui) == merged_image
    _assert_merge_is_back(ui, merged, merge_option, weights)


def test_after_a_failed_run_another_checkpoint_chosen_stays_and_the_merge_is_let_go(ui, merged):
    with pytest.raises(RuntimeError):
        _txt2img(ui, {"sd_model_checkpoint": ui.title("model_a")}, prompt=["a", "b"])
    _choose(ui, "model_b")
    image = _txt2img(ui)
    assert ui.model.sd_checkpoint_info.filename.endswith("model_b.safetensors")
    assert ui.workbench.live is None
    assert merged.name not in " ".join(_refresh_list(ui))
    assert image == _txt2img(ui)


def test_a_busy_alloy_at_the_end_of_the_run_holds_the_merge_until_the_next_run(ui, merged):
    merge_option = _option(ui)
    merged_image = _txt2img(ui)
    weights = _weights(ui)
    lock = ui.workbench._lock
    assert lock.acquire(blocking=False)  # a merge under way, waiting for the WebUI's queue: no deadlock
    try:
        _txt2img(ui, {"sd_model_checkpoint": ui.title("model_a")})
    finally:
        lock.release()
    assert ui.workbench.live is None and _option(ui) == merge_option
    assert _txt2img(ui) == merged_image
    _assert_merge_is_back(ui, merged, merge_option, weights)
