"""The `modelspec.*` metadata fields (SAI model spec 1.0) of a file Alloy writes: a merged checkpoint or a LoRA."""

from __future__ import annotations

import datetime
import os

from lib_merge.arch.registry import ARCHITECTURES

_SD_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"
_IMPLEMENTATIONS = {
    "flux": "https://github.com/black-forest-labs/flux",
    "chroma": "https://github.com/lodestone-rock/flow",
    "sd3": "https://github.com/Stability-AI/sd3.5",
    "sd35_large": "https://github.com/Stability-AI/sd3.5",
}
_VARIANT_SUFFIX = {"inpainting": "/inpaint", "pix2pix": "/instruct-pix2pix"}


def modelspec_fields(
    arch_id: str, prediction: str, output: str, data_sha256: str, variant: str = "", kind: str = ""
) -> dict[str, str]:
    """The fields for a file of `arch_id` at `output`; `kind` is appended to the architecture ("/lora")."""
    arch = ARCHITECTURES.get(arch_id)
    v768 = arch_id == "sd2" and prediction.startswith("v")
    if arch is None:
        name = "unknown"
    else:
        name = "stable-diffusion-v2-768-v" if v768 else arch.variant_modelspec(variant)
    resolution = "768x768" if v768 else (arch.resolution if arch else "512x512")
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": name + _VARIANT_SUFFIX.get(variant, "") + kind,
        "modelspec.implementation": _IMPLEMENTATIONS.get(arch_id, _SD_IMPLEMENTATION),
        "modelspec.title": os.path.splitext(os.path.basename(output))[0],
        "modelspec.date": creation_time(),
        "modelspec.hash_sha256": "0x" + data_sha256,
        "modelspec.prediction_type": "v" if prediction.startswith(("v", "edm_v")) else "epsilon",
        "modelspec.resolution": resolution,
    }


def creation_time() -> str:
    """Now, or `$SOURCE_DATE_EPOCH` (the reproducible-builds convention, in UTC) when it holds whole
    seconds: the same merge then writes the same bytes on every machine and surface."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        moment = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    else:
        moment = datetime.datetime.now().astimezone()
    return moment.isoformat(timespec="seconds")
