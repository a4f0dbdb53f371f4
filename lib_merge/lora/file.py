"""A LoRA file: its modules, what base model it was made for, and where its modules land in a checkpoint.

LoRA files are small (MB, not GB), so they are read whole; the checkpoint they apply to is not.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from lib_merge.arch.detect import detect
from lib_merge.arch.registry import ARCHITECTURES, DATA_DIR, arch_keys
from lib_merge.errors import CorruptModelError, LoraFormatError, LoraMismatchError
from lib_merge.io import open_model
from lib_merge.lora.formats import LoraModule, group_modules
from lib_merge.lora.keymap import KeyMap, Target, kohya_name

_JOINT = re.compile(r"lora_unet_joint_blocks_(\d+)_")
MAX_UNMATCHED = 0.10  # more than this share of modules without a target: the LoRA is for another base


@dataclass
class LoraFile:
    path: str
    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @classmethod
    def read(cls, path: str) -> LoraFile:
        """The whole file, grouped into modules; a damaged file or one without LoRA modules is an error
        naming the file."""
        source = open_model(path)
        try:
            found = detect({key: info.shape for key, info in source.tensors.items()})
            if found.id != "unknown":  # a checkpoint chosen by mistake: say so instead of listing its keys
                raise LoraFormatError(f"{os.path.basename(path)} is a checkpoint ({found.label}), not a LoRA")
            tensors = {key: source.read(key) for key in source.keys()}
            metadata = dict(source.metadata)
        finally:
            source.close()
        try:
            modules = group_modules(tensors)
        except LoraFormatError as e:
            raise LoraFormatError(f"{os.path.basename(path)}: {e}") from None
        if not modules:
            raise LoraFormatError(f"{os.path.basename(path)} holds no LoRA modules")
        for module in modules.values():
            try:
                module.kind  # noqa: B018 - refuses a module with parts of no known type
            except LoraFormatError as e:
                raise LoraFormatError(f"{os.path.basename(path)}: {e}") from None
            bad = [part for part, t in module.parts.items() if t.is_floating_point() and not t.isfinite().all()]
            if bad:
                name = os.path.basename(path)
                raise LoraFormatError(f"{name}: module {module.name} has NaN or infinite values in {bad[0]}")
        return cls(os.path.abspath(path), modules, metadata)

    def likely_base(self) -> str | None:
        """The architecture id the module names and widths point to (sd1, sd2, sdxl, flux, sd3), or None."""
        names = [kohya_name(n) for n in self.modules]
        transformer = self._transformer_base(names)
        if transformer is not None:
            return transformer
        if any(n.startswith(("lora_te1_", "lora_te2_")) for n in names):
            return "sdxl"
        if any(n.startswith("lora_unet_input_blocks_") for n in names):
            return "sdxl"
        widths = Counter(self._text_width(m) for n, m in self.modules.items() if kohya_name(n).startswith("lora_te_"))
        widths.pop(None, None)
        if widths:
            return "sd2" if widths.most_common(1)[0][0] == 1024 else "sd1"
        return "sd1" if any(n.startswith("lora_unet_") for n in names) else None

    def _transformer_base(self, names: list[str]) -> str | None:
        """Flux or SD3 by their block names; diffusers' `transformer_blocks` (both have them) by the
        hidden width of their attention (Flux 3072; SD3 and SD3.5 medium 1536, SD3.5 large 2432, which
        also has 38 blocks to their 24); a LoRA of the text encoders only by T5 beside CLIP-G (SD3) or not."""
        if any(s in n for n in names for s in ("double_blocks", "single_blocks", "single_transformer_blocks")):
            return "flux"
        widths = {
            self._text_width(self.modules[name])
            for name, n in zip(self.modules, names, strict=True)
            if n.endswith(("attn_to_q", "attn_qkv", "attn_to_out_0", "attn_proj")) and "_blocks_" in n
        }
        blocks = [int(m.group(1)) for n in names if (m := _JOINT.match(n))]
        if blocks or any(n.startswith("lora_unet_transformer_blocks_") for n in names):
            if (blocks and max(blocks) >= 24) or 2432 in widths:
                return "sd35_large"
            return "flux" if 3072 in widths or not (blocks or widths - {None}) else "sd3"
        if any(n.startswith(("lora_te2_encoder_block_", "lora_te3_encoder_block_")) for n in names):
            return "sd3" if any(n.startswith("lora_te2_text_model_") for n in names) else "flux"
        return None

    @staticmethod
    def _text_width(module: LoraModule) -> int | None:
        down = module.parts.get("down")
        return int(down.shape[1]) if down is not None and down.dim() == 2 else None

    def kinds(self) -> Counter:
        return Counter(m.kind + ("+dora" if m.dora else "") for m in self.modules.values())


@dataclass
class LoraMatch:
    """Where the modules of one LoRA land in one checkpoint."""

    targets: dict[str, Target]  # module name -> the checkpoint weight (or row slice) it changes
    unmatched: list[str]

    def summary(self) -> str:
        text = f"{len(self.targets)} modules matched"
        if self.unmatched:
            shown = ", ".join(self.unmatched[:5]) + (", …" if len(self.unmatched) > 5 else "")
            text += f"; {len(self.unmatched)} not found in the checkpoint: {shown}"
        return text


def match(lora: LoraFile, shapes: Mapping[str, tuple[int, ...]], model_label: str, strict: bool = True) -> LoraMatch:
    """Map every module; with `strict`, more than 10 % unmatched (or a shape that does not fit) is an
    error that names the base the LoRA looks made for."""
    keymap = KeyMap(shapes)
    targets: dict[str, Target] = {}
    unmatched: list[str] = []
    for name, module in lora.modules.items():
        target = _inpainting_input(module, keymap.target(name), shapes)
        if target is None or not _fits(module, target, shapes):
            unmatched.append(name)
        else:
            targets[name] = target
    if strict and len(unmatched) > MAX_UNMATCHED * len(lora.modules):
        base = lora.likely_base()
        found = detect(shapes)
        model_arch = found.label if found.id != "unknown" else None
        made_for = base_label(base) if base in ARCHITECTURES else None
        if made_for and made_for != model_arch:
            hint = f"; it looks made for {made_for}" + (f", not {model_arch}" if model_arch else "")
        elif made_for:
            hint = f" ({model_arch}), though its names look made for {made_for}"
        else:
            hint = f" ({model_arch}); its names match no architecture Alloy knows" if model_arch else ""
        raise LoraMismatchError(
            f"{lora.name}: {len(unmatched)} of {len(lora.modules)} modules have no place in {model_label}{hint} "
            f"(first: {', '.join(unmatched[:3])})"
        )
    return LoraMatch(targets, unmatched)


_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
LATENT_CHANNELS = 4


def _inpainting_input(module: LoraModule, target: Target | None, shapes) -> Target | None:
    """An SD LoRA's conv_in change on an inpainting (9) or pix2pix (8) model: its first 4 input channels."""
    if target is None or target.key != _CONV_IN or len(shapes[_CONV_IN]) != 4:
        return target
    down = module.parts.get("down")
    wide = shapes[_CONV_IN][1] > LATENT_CHANNELS
    if wide and down is not None and down.dim() > 1 and down.shape[1] == LATENT_CHANNELS:
        return Target(target.key, columns=LATENT_CHANNELS)
    return target


def target_shape(target: Target, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The shape of the part of the weight a module changes (its rows and input channels)."""
    shape = list(shapes[target.key])
    if target.rows:
        shape[0] = target.rows[1] - target.rows[0]
    if target.columns:
        shape[1] = target.columns
    return tuple(shape)


def _fits(module: LoraModule, target: Target, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether the module's factors have the target's output and input sizes (where they tell)."""
    shape = target_shape(target, shapes)
    rows = shape[0]
    p = module.parts
    if "up" in p and "down" in p:
        return p["up"].shape[0] == rows and p["down"].shape[1] == (shape[1] if len(shape) > 1 else 1)
    for part in ("diff", "w_norm"):
        if part in p:
            return p[part].numel() == rows * math.prod(shape[1:])
    return True


def base_shapes(arch_id: str) -> dict[str, tuple[int, ...]]:
    """The key shapes of an architecture's reference layout (for inspecting a LoRA without a checkpoint)."""
    arch = ARCHITECTURES.get(arch_id)
    data_file = arch.data_file if arch is not None else f"{arch_id}.json"
    if not data_file or not (DATA_DIR / data_file).is_file():
        raise CorruptModelError(f"no key data for {arch.label if arch is not None else arch_id}")
    return {k: shape for k, (shape, _) in arch_keys(data_file).items()}


def base_label(arch_id: str | None) -> str:
    """An architecture's label ("unknown" for None or an id the registry lacks)."""
    return ARCHITECTURES[arch_id].label if arch_id in ARCHITECTURES else "unknown"
