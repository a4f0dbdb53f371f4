"""Forge's checkpoint switch (modules_forge/main_entry.py): records the choice; the load follows."""

from modules import sd_models, shared


def checkpoint_change(ckpt_name, save=True, refresh=True):
    new = sd_models.get_closet_checkpoint_match(ckpt_name)
    current = sd_models.get_closet_checkpoint_match(shared.opts.data.get("sd_model_checkpoint", ""))
    if new == current:
        return False
    shared.opts.set("sd_model_checkpoint", ckpt_name)  # the double loads here; Forge at the next generation
    return True
