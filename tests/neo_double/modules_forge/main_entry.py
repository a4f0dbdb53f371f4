"""Forge Neo's checkpoint switch and dropdown (modules_forge/main_entry.py at 3df257ae)."""

import gradio as gr
from modules import script_callbacks, sd_models, shared


def refresh_model_loading_parameters(*, refresh=True):
    if not refresh:
        return
    sd_models.model_data.forge_loading_parameters = dict(
        checkpoint_info=sd_models.select_checkpoint(),
        additional_modules=shared.opts.data.get("forge_additional_modules", []),
        unet_storage_dtype=None,
    )


def checkpoint_change(ckpt_name: str, preset: str, save=True, refresh=True) -> bool:
    new = sd_models.get_closet_checkpoint_match(ckpt_name)
    current = sd_models.get_closet_checkpoint_match(shared.opts.data.get("sd_model_checkpoint", ""))
    if new == current:
        return False
    shared.opts.set("sd_model_checkpoint", ckpt_name)
    if preset is not None:
        shared.opts.set(f"forge_checkpoint_{preset}", ckpt_name)
    refresh_model_loading_parameters(refresh=refresh)  # (save=True also writes config.json)
    return True


def make_checkpoint_dropdown():
    """Inside the page's Blocks: the dropdown, reported to the after_component callbacks as the WebUI does."""
    kwargs = dict(label="Checkpoint", value=None, choices=None, elem_id="setting_sd_model_checkpoint")
    dropdown = gr.Dropdown(**kwargs)
    script_callbacks.after_component_callback(dropdown, **kwargs)
    return dropdown


def page_load(dropdown):
    """Neo's page load answers `gr.update(choices=…)` for the dropdown; Gradio 4 applies it by building the
    dropdown again from its constructor arguments, outside any Blocks, with `render=False`, and the
    WebUI's patched constructor reports that copy to the after_component callbacks."""
    shared_choices = sd_models.checkpoint_tiles(shared.opts.data.get("sd_checkpoint_dropdown_use_short", False))
    kwargs = dict(dropdown.constructor_args, choices=shared_choices, render=False)
    kwargs.pop("value", None)
    copy = gr.Dropdown(**kwargs)
    script_callbacks.after_component_callback(copy, **kwargs)
    return copy
