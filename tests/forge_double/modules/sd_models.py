"""Forge's modules/sd_models.py around a live patch: the A1111 checkpoint registry (shared with the A1111
double), the A1111 load functions stubbed out, and `forge_model_reload()`, which reloads only when the
string of `model_data.forge_loading_parameters` differs from `model_data.forge_hash`."""

import importlib.util
from pathlib import Path

import torch

from modules import script_callbacks, shared

_spec = importlib.util.spec_from_file_location(
    "modules._a1111_registry", Path(__file__).resolve().parents[2] / "webui_double" / "modules" / "sd_models.py"
)
registry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(registry)  # set registry.model_path to the checkpoint folder

CheckpointInfo = registry.CheckpointInfo
checkpoints_list = registry.checkpoints_list
checkpoint_aliases = registry.checkpoint_aliases
list_models = registry.list_models
get_closet_checkpoint_match = registry.get_closet_checkpoint_match
select_checkpoint = registry.select_checkpoint


def checkpoint_tiles(use_short=False):
    """What Forge's checkpoint dropdown lists: file names, not A1111's titles."""
    return [x.short_title if use_short else x.name for x in checkpoints_list.values()]


model_path = ""  # models/Stable-diffusion (the registry keeps its own copy)
loads = []  # file of every load from disk, for tests


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.forge_loading_parameters = {}
        self.forge_hash = ""

    def get_sd_model(self):
        return self.sd_model


model_data = SdModelData()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    pass  # Forge: a stub


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    pass  # Forge: a stub; the shared Options.set calls it on a checkpoint change


@torch.inference_mode()
def forge_model_reload():
    from backend.loader import forge_loader

    current = str(model_data.forge_loading_parameters)
    if model_data.forge_hash == current:
        return model_data.sd_model, False
    model_data.sd_model = None
    info = model_data.forge_loading_parameters["checkpoint_info"]
    model = forge_loader(info.filename)
    loads.append(info.filename)
    model.sd_checkpoint_info = info
    model.filename = info.filename
    model.sd_model_hash = info.calculate_shorthash()
    shared.opts.data["sd_checkpoint_hash"] = info.sha256
    model_data.sd_model = model
    script_callbacks.model_loaded_callback(model)
    model_data.forge_hash = current
    return model, True
