"""Checkpoint registry and loading, reduced to what v1.10 does around an in-place patch."""

import hashlib
import os

import torch
from safetensors.torch import load_file

from modules import script_callbacks, shared

model_path = ""  # models/Stable-diffusion, set by the test
live_dtype = torch.float16  # the WebUI default; --no-half gives float32
checkpoints_list = {}
checkpoint_aliases = {}
hash_cache = {}  # "checkpoint/<name>" -> sha256, like the WebUI's cache.json
loads = []  # file of every load from disk, for tests


def model_hash(filename):
    try:
        with open(filename, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[0:8]
    except FileNotFoundError:
        return "NOFILE"


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        abspath = os.path.abspath(filename)
        name = os.path.basename(filename)  # named relative to the first folder that holds it
        for folder in [*_extra_folders(), model_path]:
            if abspath.startswith(os.path.abspath(folder)):
                name = abspath.replace(os.path.abspath(folder), "")
                break
        name = name.lstrip("/\\")
        self.name = name
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(name.replace("/", "_"))[0]
        self.hash = model_hash(filename)
        self.sha256 = hash_cache.get(f"checkpoint/{name}") if os.path.exists(filename) else None
        self.shorthash = self.sha256[0:10] if self.sha256 else None
        self.title = name if self.shorthash is None else f"{name} [{self.shorthash}]"
        self.short_title = (
            self.name_for_extra if self.shorthash is None else f"{self.name_for_extra} [{self.shorthash}]"
        )
        self.ids = [self.hash, self.model_name, self.title, name, self.name_for_extra, f"{name} [{self.hash}]"]
        if self.shorthash:
            self.ids += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]"]
        self.metadata = {}

    def register(self):
        checkpoints_list[self.title] = self
        for i in self.ids:
            checkpoint_aliases[i] = self

    def calculate_shorthash(self):
        with open(self.filename, "rb") as f:  # FileNotFoundError for a file that does not exist
            self.sha256 = hashlib.sha256(f.read()).hexdigest()
        hash_cache[f"checkpoint/{self.name}"] = self.sha256
        old = self.title
        self.shorthash = self.sha256[0:10]
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids += [self.shorthash, self.sha256, self.title]
        checkpoints_list.pop(old, None)
        self.register()
        return self.shorthash


def _extra_folders():
    """A1111's and Forge's --ckpt-dir, or Forge Neo's --ckpt-dirs (a list; Neo has no --ckpt-dir)."""
    one = getattr(shared.cmd_opts, "ckpt_dir", None)
    return [one] if one else list(getattr(shared.cmd_opts, "ckpt_dirs", None) or [])


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    folders = [model_path, *_extra_folders()]
    for folder in folders:
        for root, _, files in os.walk(folder):
            for f in sorted(files):
                if f.endswith((".safetensors", ".ckpt")):
                    CheckpointInfo(os.path.join(root, f)).register()


def checkpoint_tiles(use_short=False):
    """What the checkpoint dropdown lists (v1.10.1: titles)."""
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


def get_closet_checkpoint_match(search):
    if not search:
        return None
    info = checkpoint_aliases.get(search)
    if info is not None:
        return info
    found = sorted([i for i in checkpoints_list.values() if search in i.title], key=lambda x: len(x.title))
    return found[0] if found else None


def select_checkpoint():
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if info is not None:
        return info
    if not checkpoints_list:
        raise FileNotFoundError("No checkpoints found")
    return next(iter(checkpoints_list.values()))  # "not found; loading fallback"


class SdModelData:
    def __init__(self):
        self.sd_model = None

    def get_sd_model(self):
        if self.sd_model is None:
            load_model()
        return self.sd_model


model_data = SdModelData()


def _live_name(key):
    if key.startswith("cond_stage_model."):
        return key.replace("cond_stage_model.", "cond_stage_model.wrapped.", 1)
    return key


def load_model(info=None):
    from helpers import build_model

    info = info or select_checkpoint()
    state = load_file(info.filename)
    loads.append(info.filename)
    model = build_model(state, live_dtype, hijack=True)
    model.hijacked = True
    _set_identity(model, info)
    model_data.sd_model = model
    script_callbacks.model_loaded_callback(model)
    return model


def _set_identity(model, info):
    info.calculate_shorthash()
    shared.opts.data["sd_model_checkpoint"] = info.title
    model.sd_checkpoint_info = info
    model.sd_model_checkpoint = info.filename
    model.sd_model_hash = info.shorthash


def load_model_weights(model, info):
    model.hijacked = False  # undo_hijack; reading a missing file leaves it so (verified on v1.10.1)
    state = load_file(info.filename)
    loads.append(info.filename)
    live = dict(model.state_dict(keep_vars=True))
    with torch.no_grad():
        for key, value in state.items():
            target = live[_live_name(key)]
            target.copy_(value.to(target.dtype))
    for module in model.modules():  # load_state_dict resets the LoRA extension's caches
        if hasattr(module, "network_current_names"):
            module.network_current_names = ()
            module.network_weights_backup = None
    _set_identity(model, info)
    model.hijacked = True


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    info = info or select_checkpoint()
    sd_model = sd_model or model_data.sd_model
    if sd_model is None:
        return load_model(info)
    if sd_model.sd_model_checkpoint == info.filename and not forced_reload:
        return sd_model
    load_model_weights(sd_model, info)
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model
