"""Forge's LoraLoader (backend/patcher/lora.py) as it treats parameters: applying LoRAs replaces each
patched Parameter object by a new one and keeps the original object as its backup; a refresh with
other LoRAs (or none) first puts the originals back. Nothing happens when the LoRA set is unchanged."""

import torch

DELTA = 0.125  # what a LoRA adds to every weight it patches, in the double


def get_attr(model, key):
    *path, leaf = key.split(".")
    for part in path:
        model = getattr(model, part)
    return model, leaf


def set_attr_raw(model, key, value):
    parent, leaf = get_attr(model, key)
    setattr(parent, leaf, value)


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=torch.device("cpu")):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash:
            return
        for key, weight in self.backup.items():
            set_attr_raw(self.model, key, weight)
        self.backup = {}
        wanted = {}
        for patches in lora_patches.values():
            for key, delta in patches.items():
                wanted[key] = wanted.get(key, 0.0) + delta
        for key, delta in wanted.items():
            parent, leaf = get_attr(self.model, key)
            weight = getattr(parent, leaf)
            self.backup[key] = weight.to(device=offload_device)  # the same object on the CPU
            set_attr_raw(self.model, key, torch.nn.Parameter(weight + delta, requires_grad=False))
        self.loaded_hash = hashes
