"""Forge's checkpoint loader (backend/loader.py) as the double needs it: the checkpoint is split by the
model's huggingface_guess class into component state dicts, and each is loaded into its own module.
Modules are built under inference mode, as Forge's `forge_model_reload` does: their parameters are
inference tensors. On the CPU Forge stores the text encoders in fp16 (`text_encoder_dtype()`), the
UNet and VAE in fp32. Keys outside every component (the noise schedule's buffers, EMA copies) are not
loaded at all. The text encoders get a `text_projection` of their own (Forge's IntegratedCLIP)."""

import huggingface_guess
import torch
from helpers import build_model
from safetensors.torch import load_file

from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.patcher.base import ModelPatcher
from backend.state_dict import try_filter_state_dict

TEXT_ENCODER_DTYPE = torch.float16


def preprocess_state_dict(sd):
    if not any(k.startswith("model.diffusion_model") for k in sd):
        sd = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    return sd


def split_state_dict(path):
    sd = preprocess_state_dict(load_file(path))
    guess = huggingface_guess.guess(sd)
    sd = guess.process_vae_state_dict(sd)
    parts = {
        guess.unet_target: try_filter_state_dict(sd, guess.unet_key_prefix),
        guess.vae_target: try_filter_state_dict(sd, guess.vae_key_prefix),
    }
    sd = guess.process_clip_state_dict(sd)
    for prefix, component in guess.clip_target.items():
        parts[component] = try_filter_state_dict(sd, [prefix + "."])
    return parts, guess


def build_module(state, dtype=torch.float32):
    return build_model(state, dtype, hijack=False, requires_grad=False)


class KModel(torch.nn.Module):
    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model


class JointTextEncoder(torch.nn.Module):
    """Forge's (backend/patcher/clip.py): a plain Module with one child per text encoder, not subscriptable."""

    def __init__(self, encoders):
        super().__init__()
        for name, module in encoders.items():
            self.add_module(name, module)


class CLIP:
    def __init__(self, encoders):
        self.cond_stage_model = JointTextEncoder(encoders)
        self.patcher = ModelPatcher(self.cond_stage_model)


class VAE:
    def __init__(self, model):
        self.first_stage_model = model
        self.patcher = ModelPatcher(model)


@torch.inference_mode()
def forge_loader(path, dtype=torch.float32):
    parts, guess = split_state_dict(path)
    encoders = {}
    for prefix, component in guess.clip_target.items():
        encoder = build_module(parts[component], TEXT_ENCODER_DTYPE)
        if not hasattr(encoder.transformer, "text_projection"):
            width = parts[component]["transformer.text_model.final_layer_norm.weight"].shape[0]
            projection = torch.nn.Linear(width, width, bias=False, dtype=TEXT_ENCODER_DTYPE)
            torch.nn.init.eye_(projection.weight)
            encoder.transformer.add_module("text_projection", projection)
        encoders[prefix] = encoder
    objects = ForgeObjects(
        unet=ModelPatcher(KModel(build_module(parts[guess.unet_target], dtype))),
        clip=CLIP(encoders),
        vae=VAE(build_module(parts[guess.vae_target], dtype)),
    )
    return ForgeDiffusionEngine(guess, objects)
