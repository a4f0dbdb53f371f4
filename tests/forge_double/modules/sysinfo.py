"""Forge's `set_config` (modules/sysinfo.py), which `process_images` uses to apply and to write back
`override_settings`: unchanged values are skipped; a checkpoint must be a known alias (else RuntimeError
"model … not found") and goes through Forge's checkpoint switch, which only records the choice."""

from modules import sd_models, shared


def set_config(req, is_api=False, run_callbacks=True, save_config=True):
    from modules_forge import main_entry

    refresh = False
    for key, value in req.items():
        if value == shared.opts.data.get(key):
            continue
        if key == "sd_model_checkpoint":
            if value is not None and value not in sd_models.checkpoint_aliases:
                raise RuntimeError(f"model {value!r} not found")
            refresh = main_entry.checkpoint_change(value, save=False, refresh=False) or refresh
        else:
            shared.opts.set(key, value, is_api=is_api, run_callbacks=run_callbacks)
    if refresh:
        main_entry.refresh_model_loading_parameters()
