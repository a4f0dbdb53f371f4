"""Which parts of a file are which component, for full checkpoints and for component files.

A full checkpoint's components are its architecture's key prefixes (arch/registry.py). A component
file (a VAE, a text encoder, a bare UNet) holds one component's keys without that prefix; it is
told by a few landmark keys, and its keys take the prefix of the architecture it is put into.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lib_merge.arch.registry import PREDICTION_MARKERS, Architecture

# component -> (landmark key of the bare component file, its width test: (key, dim, size) or None)
_LANDMARKS: dict[str, tuple[str, tuple[str, int, int] | None]] = {
    "vae": ("decoder.conv_out.weight", None),
    "unet": ("input_blocks.0.0.weight", None),
    "clip_l": ("text_model.encoder.layers.0.self_attn.q_proj.weight", ("text_model.final_layer_norm.weight", 0, 768)),
    "clip_h": ("transformer.resblocks.0.attn.in_proj_weight", ("transformer.resblocks.0.ln_1.weight", 0, 1024)),
    "clip_g": ("transformer.resblocks.0.attn.in_proj_weight", ("transformer.resblocks.0.ln_1.weight", 0, 1280)),
    "t5xxl": ("encoder.block.0.layer.0.SelfAttention.q.weight", None),
}
JUNK_PREFIXES = ("embedding_manager.", "optimizer", "lr_scheduler", "state_dict.", "loss_fn.")


@dataclass(frozen=True)
class ComponentFile:
    """A file holding one component without its checkpoint prefix."""

    component: str


def component_file(shapes: Mapping[str, tuple[int, ...]], wanted: str | None = None) -> ComponentFile | None:
    """The component a bare component file holds, or None for anything else. With `wanted`, its landmark
    key suffices unless the widths say the file is another component with the same landmark (CLIP-L/HF
    CLIP-G, OpenCLIP-H/G), so files of unusual widths are taken for what they are asked to be."""
    if wanted in _LANDMARKS and _LANDMARKS[wanted][0] in shapes:
        landmark = _LANDMARKS[wanted][0]
        rivals = [n for n, (mark, _) in _LANDMARKS.items() if mark == landmark and n != wanted]
        if not any(_width_fits(shapes, n) for n in rivals):
            return ComponentFile(wanted)
    for name, (landmark, _) in _LANDMARKS.items():
        if landmark in shapes and _width_fits(shapes, name):
            return ComponentFile(name)
    return None


def _width_fits(shapes: Mapping[str, tuple[int, ...]], name: str) -> bool:
    width = _LANDMARKS[name][1]
    if width is None:
        return True
    key, dim, size = width
    return key in shapes and shapes[key][dim] == size


def kept_by_prune(key: str, arch: Architecture, keep_ema: bool) -> bool:
    """Prune keeps the architecture's component keys and the prediction markers (and EMA on request)."""
    if key.startswith("model_ema."):
        return keep_ema
    return arch.component_of(key) is not None or key in PREDICTION_MARKERS


def component_keys(keys: list[str], arch: Architecture, component: str) -> list[str]:
    """The keys of one component of a full checkpoint."""
    return [k for k in keys if arch.component_of(k) == component]
