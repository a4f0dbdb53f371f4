"""The WebUI's Refresh of the checkpoint list (modules/shared_items.py): `list_models()` looked up at call time."""


def refresh_checkpoints():
    import modules.sd_models

    return modules.sd_models.list_models()
