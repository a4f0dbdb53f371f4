"""Forge's ModelPatcher (backend/patcher/base.py), reduced to its LoRA bookkeeping."""

import torch

from backend.patcher.lora import LoraLoader


class ModelPatcher:
    def __init__(self, model, offload_device=torch.device("cpu")):
        self.model = model
        self.offload_device = offload_device
        self.lora_patches = {}
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader

    def clone(self):
        other = ModelPatcher(self.model, self.offload_device)
        other.lora_patches = dict(self.lora_patches)
        return other

    def add_patches(self, *, filename, patches, strength=1.0):
        self.lora_patches[(filename, strength)] = patches

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)
