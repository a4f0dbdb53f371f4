"""Forge's checkpoint switch (modules_forge/main_entry.py): records the choice in the loading
parameters; `forge_model_reload()` loads it at the next generation."""

from modules import sd_models, shared


def refresh_model_loading_parameters():
    sd_models.model_data.forge_loading_parameters = dict(
        checkpoint_info=sd_models.select_checkpoint(),
        additional_modules=shared.opts.data.get("forge_additional_modules", []),
        unet_storage_dtype=None,
    )


def checkpoint_change(ckpt_name, save=True, refresh=True):
    new = sd_models.get_closet_checkpoint_match(ckpt_name)
    current = sd_models.get_closet_checkpoint_match(shared.opts.data.get("sd_model_checkpoint", ""))
    if new == current:
        return False
    shared.opts.set("sd_model_checkpoint", ckpt_name)
    if refresh:
        refresh_model_loading_parameters()
    return True


def refresh_models():
    """What every page load and the Refresh button run: the checkpoint list read again from disk."""
    from modules import shared_items

    shared_items.refresh_checkpoints()
    return sd_models.checkpoint_tiles(shared.opts.data.get("sd_checkpoint_dropdown_use_short", False))
