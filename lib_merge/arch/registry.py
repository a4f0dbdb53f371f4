"""The architectures Alloy knows: components, detection signatures, modelspec names.

Key lists come from data/<id>.json (facts about public checkpoint layouts). A signature
is a set of key names with their tensor ranks; absolute sizes are never compared, so a
miniature model with every large dimension scaled down is recognised like the full one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
UNET = "model.diffusion_model."

SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
PREDICTION_MARKERS = ("v_pred", "ztsnr", "edm_vpred.sigma_max", "edm_vpred.sigma_min")
_NEVER_MERGE_EXACT = set(SCHEDULE_BUFFERS) | set(PREDICTION_MARKERS) | {"logvar", "model.model_sampling.sigmas"}


def is_mergeable(key: str, dtype) -> bool:
    """Floating (a torch dtype), and not a position id, schedule buffer, temperature, EMA or marker."""
    if not dtype.is_floating_point:
        return False
    if key.endswith("position_ids") or key.endswith("logit_scale") or key.startswith("model_ema."):
        return False
    # Schedule buffers are never merged, at the top level or under "model.".
    return key not in _NEVER_MERGE_EXACT and key.removeprefix("model.") not in SCHEDULE_BUFFERS


@dataclass(frozen=True)
class Architecture:
    id: str
    label: str
    components: dict[str, str]  # component name -> key prefix
    schema_id: str | None
    data_file: str | None  # key list in data/, None when only a signature is known
    signature: dict[str, int] = field(default_factory=dict)  # key -> rank; all must be present
    variants: dict[int, str] = field(default_factory=dict)  # UNet input channels -> variant name
    modelspec: str = ""
    resolution: str = "512x512"
    absent: tuple[str, ...] = ()  # keys that must not be present (they belong to a sibling architecture)
    key_variants: tuple[tuple[str, bool, str], ...] = ()  # (key, present?, variant): the first that holds names it
    named_variants: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # variant -> label, modelspec, data

    def variant_label(self, variant: str) -> str:
        named = self.named_variants.get(variant)
        if named:
            return named[0]
        return f"{self.label} {variant}" if variant else self.label

    def variant_modelspec(self, variant: str) -> str:
        named = self.named_variants.get(variant)
        return named[1] if named else self.modelspec

    def variant_data(self, variant: str) -> str | None:
        named = self.named_variants.get(variant)
        return named[2] if named and named[2] else self.data_file

    @property
    def keys(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return arch_keys(self.data_file) if self.data_file else {}

    def component_of(self, key: str) -> str | None:
        for name, prefix in self.components.items():
            if key.startswith(prefix):
                return name
        return None


@functools.cache
def arch_keys(data_file: str) -> dict[str, tuple[tuple[int, ...], str]]:
    raw = json.loads((DATA_DIR / data_file).read_text())
    return {k: (tuple(shape), dtype) for k, (shape, dtype) in raw.items()}


_SD3_COMPONENTS = {
    "diffuser": UNET,
    "clip_l": "text_encoders.clip_l.",
    "clip_g": "text_encoders.clip_g.",
    "t5xxl": "text_encoders.t5xxl.",
    "vae": "first_stage_model.",
}
_SD3_SIGNATURE = {
    UNET + "joint_blocks.0.x_block.attn.qkv.weight": 2,
    UNET + "joint_blocks.0.context_block.attn.qkv.weight": 2,
    UNET + "x_embedder.proj.weight": 4,
    UNET + "context_embedder.weight": 2,
}

ARCHITECTURES: dict[str, Architecture] = {
    a.id: a
    for a in (
        Architecture(
            id="sd1",
            label="SD1",
            components={"unet": UNET, "clip_l": "cond_stage_model.transformer.", "vae": "first_stage_model."},
            schema_id="sd1",
            data_file="sd1.json",
            signature={
                UNET + "time_embed.0.weight": 2,
                UNET + "input_blocks.1.1.proj_in.weight": 4,  # conv proj_in: SD1
                UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": 2,
                UNET + "output_blocks.11.1.proj_out.weight": 4,
            },
            variants={4: "", 9: "inpainting", 8: "pix2pix"},
            modelspec="stable-diffusion-v1",
        ),
        Architecture(
            id="sd2",
            label="SD2",
            components={"unet": UNET, "clip_h": "cond_stage_model.model.", "vae": "first_stage_model."},
            schema_id="sd1",
            data_file="sd2.json",
            signature={
                UNET + "time_embed.0.weight": 2,
                UNET + "input_blocks.1.1.proj_in.weight": 2,  # linear proj_in: SD2
                UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": 2,
                UNET + "output_blocks.11.1.proj_out.weight": 2,
            },
            variants={4: "", 9: "inpainting", 5: "depth"},
            modelspec="stable-diffusion-v2-512",
        ),
        Architecture(
            id="sdxl",
            label="SDXL",
            components={
                "unet": UNET,
                "clip_l": "conditioner.embedders.0.transformer.",
                "clip_g": "conditioner.embedders.1.model.",
                "vae": "first_stage_model.",
            },
            schema_id="sdxl",
            data_file="sdxl.json",
            signature={
                UNET + "label_emb.0.0.weight": 2,
                UNET + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": 2,
                UNET + "input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": 2,
                UNET + "middle_block.1.transformer_blocks.9.ff.net.2.weight": 2,
                UNET + "output_blocks.8.0.skip_connection.weight": 4,
            },
            variants={4: "", 9: "inpainting"},
            modelspec="stable-diffusion-xl-v1-base",
            resolution="1024x1024",
        ),
        Architecture(
            id="sdxl_refiner",
            label="SDXL refiner",
            components={"unet": UNET, "clip_g": "conditioner.embedders.0.model.", "vae": "first_stage_model."},
            schema_id="sdxl",
            data_file=None,
            signature={
                "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight": 2,
                UNET + "input_blocks.0.0.weight": 4,
                UNET + "label_emb.0.0.weight": 2,
                UNET + "time_embed.0.weight": 2,
                UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight": 2,
                UNET + "output_blocks.0.0.in_layers.2.weight": 4,
                UNET + "out.2.weight": 4,
            },
            variants={4: ""},
            modelspec="stable-diffusion-xl-v1-refiner",
            resolution="1024x1024",
        ),
        Architecture(
            id="flux",
            label="Flux",
            components={
                "diffuser": UNET,
                "clip_l": "text_encoders.clip_l.",
                "t5xxl": "text_encoders.t5xxl.",
                "vae": "vae.",
            },
            schema_id="flux",
            data_file="flux.json",
            signature={
                UNET + "double_blocks.0.img_attn.qkv.weight": 2,
                UNET + "single_blocks.0.linear1.weight": 2,
                UNET + "img_in.weight": 2,
                UNET + "final_layer.linear.weight": 2,
            },
            modelspec="flux-1-dev",
            resolution="1024x1024",
            absent=(UNET + "distilled_guidance_layer.in_proj.weight",),
            key_variants=((UNET + "guidance_in.in_layer.weight", False, "schnell"),),
            named_variants={"schnell": ("Flux schnell", "flux-1-schnell", "")},
        ),
        Architecture(
            id="chroma",
            label="Chroma",
            components={"diffuser": UNET, "t5xxl": "text_encoders.t5xxl.", "vae": "vae."},
            schema_id="flux",
            data_file="chroma.json",
            signature={
                UNET + "distilled_guidance_layer.in_proj.weight": 2,
                UNET + "double_blocks.0.img_attn.qkv.weight": 2,
                UNET + "single_blocks.0.linear1.weight": 2,
                UNET + "img_in.weight": 2,
            },
            modelspec="chroma",
            resolution="1024x1024",
        ),
        Architecture(
            id="sd3",
            label="SD3 medium",
            components=_SD3_COMPONENTS,
            schema_id="sd3",
            data_file="sd3.json",
            signature=_SD3_SIGNATURE,
            modelspec="stable-diffusion-v3-medium",
            resolution="1024x1024",
            absent=(UNET + "joint_blocks.24.x_block.attn.qkv.weight",),
            key_variants=((UNET + "joint_blocks.0.x_block.attn2.qkv.weight", True, "3.5-medium"),),
            named_variants={"3.5-medium": ("SD3.5 medium", "stable-diffusion-v3.5-medium", "sd35_medium.json")},
        ),
        Architecture(
            id="sd35_large",
            label="SD3.5 large",
            components=_SD3_COMPONENTS,
            schema_id="sd35_large",
            data_file="sd35_large.json",
            signature={**_SD3_SIGNATURE, UNET + "joint_blocks.37.x_block.attn.qkv.weight": 2},
            modelspec="stable-diffusion-v3.5-large",
            resolution="1024x1024",
        ),
    )
}
