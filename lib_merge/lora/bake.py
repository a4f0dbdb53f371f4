"""A LoRA bound to a checkpoint: for each key, the modules that change it, and their ΔW added in place.

The recipe's `lora(x, "file", strength=…)` node is bound here once per merge: the file is read,
hashed and matched to the checkpoint's keys; the engine then asks per key (`at_key`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from lib_merge.errors import LoraFormatError, ModelHashMismatchError
from lib_merge.io.hashing import file_sha256
from lib_merge.lora.file import LoraFile, match
from lib_merge.lora.formats import LoraModule, module_bias_delta, module_delta
from lib_merge.lora.keymap import Target
from lib_merge.methods.lora import LoraRef


@dataclass
class KeyLora:
    """The modules of one LoRA that change one key (several for a fused q/k/v weight)."""

    entries: list[tuple[LoraModule, Target, bool]] = field(default_factory=list)  # module, where, bias

    def apply(self, x: torch.Tensor, strength: float) -> torch.Tensor:
        for module, where, bias in self.entries:
            target = x[where.rows[0] : where.rows[1]] if where.rows else x
            if where.columns and not bias:
                target = target[:, : where.columns]
            # a module in diffusers' row order sees (and changes) the weight in that order (the swap is its inverse)
            delta = module_bias_delta(module) if bias else module_delta(module, where.in_checkpoint_order(target))
            delta = where.in_checkpoint_order(delta.reshape(target.shape))
            target.add_(delta.to(target.device, target.dtype), alpha=float(strength))
        return x


@dataclass(frozen=True, eq=False)
class BoundLora:
    """A LoraRef bound to one checkpoint: prints as the ref (its sha256 in the recipe hash)."""

    ref: LoraRef
    by_key: Mapping[str, KeyLora]
    unmatched: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.ref.text

    @property
    def identity_text(self) -> str:
        return self.ref.identity_text

    def at_key(self, key: str) -> KeyLora | None:
        return self.by_key.get(key)


def bind_lora(ref: LoraRef, path: str, shapes: Mapping[str, tuple[int, ...]], model_label: str) -> BoundLora:
    """Read, hash and match the LoRA at `path` (the ref's file, resolved) against the checkpoint's keys."""
    lora = LoraFile.read(path)
    found = match(lora, shapes, model_label)
    if found.targets and all(lora.modules[name].is_zero() for name in found.targets):
        raise LoraFormatError(
            f"{lora.name}: every module it has for {model_label} is zero (an all-zero lora_up or lora_down, "
            "as a LoRA saved before training): baking it would change nothing"
        )
    by_key: dict[str, KeyLora] = {}
    for name, target in found.targets.items():
        module = lora.modules[name]
        by_key.setdefault(target.key, KeyLora()).entries.append((module, target, False))
        if module_bias_delta(module) is not None and target.bias_key in shapes:
            by_key.setdefault(target.bias_key, KeyLora()).entries.append((module, target, True))
    sha = file_sha256(path)
    if ref.sha256 and ref.sha256 != sha:
        raise ModelHashMismatchError(f"LoRA {lora.name} has sha256 {sha}, but the recipe expects {ref.sha256}")
    return BoundLora(LoraRef(ref.path, sha), by_key, tuple(found.unmatched))
