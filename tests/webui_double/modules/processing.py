"""txt2img processing whose image is a pure function of the loaded weights and the seed."""

import hashlib
import re

import numpy as np
import torch
from PIL import Image

from modules import sd_models, shared

UI_DEFAULTS = {"steps": 20, "sampler_name": "DPM++ 2M", "seed": -1}


class StableDiffusionProcessingTxt2Img:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
        self.extra_generation_params = {}
        self.is_api = False
        self.scripts = None
        self._script_args = ()

    @property
    def script_args(self):
        return self._script_args

    @script_args.setter
    def script_args(self, value):
        # the built-in sampler/seed scripts' setup() overwrites these unless it is an API run
        self._script_args = value
        if self.scripts is not None and not self.is_api:
            self.__dict__.update(UI_DEFAULTS)

    def close(self):
        pass


class Processed:
    def __init__(self, images, info):
        self.images = images
        self.info = info
        self.infotexts = [info] * len(images)


def weights_digest(model) -> bytes:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def render(model, seed, width, height, prompt="") -> Image.Image:
    digest = weights_digest(model) + int(seed).to_bytes(8, "little", signed=True) + prompt.encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(digest).digest()[:8], "little"))
    return Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))


def process_images(p):
    """v1.10.1's order: before_process; the checkpoint of `override_settings` (when the alias table knows
    it) is set with opts.set(…, run_callbacks=False) and loaded, else the selected one is reloaded unless
    loaded; the job, whose end runs the scripts' postprocess; then, with override_settings_restore_afterwards
    (the default), the overridden options are written back by setattr, which loads nothing."""
    if p.scripts is not None:
        p.scripts.before_process(p)
    overrides = dict(getattr(p, "override_settings", None) or {})
    stored = {k: shared.opts.data[k] for k in overrides if k in shared.opts.data}
    try:
        if sd_models.checkpoint_aliases.get(overrides.get("sd_model_checkpoint")) is None:
            overrides.pop("sd_model_checkpoint", None)
            sd_models.reload_model_weights()
        for key, value in overrides.items():
            shared.opts.set(key, value, is_api=True, run_callbacks=False)
            if key == "sd_model_checkpoint":
                sd_models.reload_model_weights()
        return _process_images_inner(p)
    finally:
        if getattr(p, "override_settings_restore_afterwards", True):
            for key, value in stored.items():
                setattr(shared.opts, key, value)


def _process_images_inner(p):
    import networks

    model = shared.sd_model
    if not model.hijacked:
        raise RuntimeError("the model is not hijacked: every generation fails until a checkpoint loads")
    count = p.batch_size * p.n_iter
    prompts = list(p.prompt) if isinstance(p.prompt, list) else [p.prompt] * count  # a list: one prompt per image
    if len(prompts) != count:
        raise RuntimeError(f"{len(prompts)} prompts for {count} images")
    networks.activate(model, re.findall(r"<lora:([^:>]+)", " ".join(prompts)))
    seed = p.seed if p.seed != -1 else 1234
    images = [render(model, seed + i, p.width, p.height, prompts[i]) for i in range(count)]
    fields = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Seed": seed,
        "Size": f"{p.width}x{p.height}",
        "Model hash": model.sd_model_hash,
        "Model": model.sd_checkpoint_info.name_for_extra,
    }
    fields.update(p.extra_generation_params)
    processed = Processed(images, f"{prompts[0]}\n" + ", ".join(f"{k}: {v}" for k, v in fields.items()))
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed
