"""Forge's txt2img processing around the model: `override_settings` applied through `set_config`, then
`forge_model_reload()`, then LoRAs from the prompt applied through the patchers (as `load_model_gpu` does
at use); the image is a pure function of every tensor of the component modules and the seed, so equal
images mean equal weights. The job's end runs the scripts' postprocess; the options are written back
through `set_config` afterwards, even when the job failed."""

import importlib.util
import re
from pathlib import Path

import torch

from modules import sd_models, shared

_spec = importlib.util.spec_from_file_location(
    "modules._a1111_processing", Path(__file__).resolve().parents[2] / "webui_double" / "modules" / "processing.py"
)
_a1111 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_a1111)
StableDiffusionProcessingTxt2Img = _a1111.StableDiffusionProcessingTxt2Img
Processed = _a1111.Processed


def components(model):
    objects = model.forge_objects_original
    return torch.nn.ModuleDict(
        {"unet": objects.unet.model, "clip": objects.clip.cond_stage_model, "vae": objects.vae.first_stage_model}
    )


def widen_embeddings(model):
    """What Forge's classic text engine does before every prompt: the text encoders' embedding modules
    go to fp32 (`Module.to`, which swaps each parameter's data)."""
    for encoder in model.forge_objects_original.clip.cond_stage_model.children():
        embeddings = encoder.transformer.text_model.embeddings
        with torch.inference_mode():
            embeddings.position_embedding.to(dtype=torch.float32)
            embeddings.token_embedding.to(dtype=torch.float32)


def process_images(p):
    """Forge's order: before_process; a checkpoint override the alias table does not know is dropped;
    set_config(overrides); forge_model_reload(); the job; then set_config(the stored options)."""
    from modules.sysinfo import set_config

    if p.scripts is not None:
        p.scripts.before_process(p)
    overrides = p.override_settings = dict(getattr(p, "override_settings", None) or {})
    stored = {k: shared.opts.data[k] for k in overrides if k in shared.opts.data}
    try:
        if sd_models.checkpoint_aliases.get(overrides.get("sd_model_checkpoint")) is None:
            overrides.pop("sd_model_checkpoint", None)
        set_config(overrides, is_api=True, run_callbacks=False, save_config=False)
        sd_models.forge_model_reload()
        return _process_images_inner(p)
    finally:
        if getattr(p, "override_settings_restore_afterwards", True):
            set_config(stored, save_config=False)


def _process_images_inner(p):
    from backend.patcher.lora import DELTA

    model = shared.sd_model
    count = p.batch_size * p.n_iter
    prompts = list(p.prompt) if isinstance(p.prompt, list) else [p.prompt] * count
    if len(prompts) != count:
        raise RuntimeError(f"{len(prompts)} prompts for {count} images")
    objects = model.forge_objects_original
    unet, clip = objects.unet.clone(), objects.clip.patcher.clone()
    for name in re.findall(r"<lora:([^:>]+)", " ".join(prompts)):
        for patcher in (unet, clip):
            keys = [k for k, v in patcher.model.named_parameters() if k.endswith("weight") and v.dim() == 2]
            patcher.add_patches(filename=name, patches={k: DELTA for k in keys})
    unet.refresh_loras()
    clip.refresh_loras()
    widen_embeddings(model)
    seed = p.seed if p.seed != -1 else 1234
    images = [_a1111.render(components(model), seed + i, p.width, p.height, prompts[i]) for i in range(count)]
    fields = {
        "Steps": p.steps,
        "Seed": seed,
        "Model hash": model.sd_model_hash,
        "Model": model.sd_checkpoint_info.name_for_extra,
    }
    fields.update(p.extra_generation_params)
    processed = Processed(images, f"{prompts[0]}\n" + ", ".join(f"{k}: {v}" for k, v in fields.items()))
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed
