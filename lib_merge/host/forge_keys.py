"""Where Forge keeps each checkpoint key: Forge's own load-time key conversion, traced.

Forge loads a checkpoint into separate component modules (UNet, VAE, text encoders), renaming the
keys on the way and splitting or transposing a few (`backend/loader.py: split_state_dict` and the
model's huggingface_guess class). Alloy does not restate those rules: it runs Forge's own functions
on stand-ins (`KeyTrace`) that record what becomes of each key. A stand-in follows renames, row
slices and transposes; anything else means this Forge converts keys in a way Alloy cannot follow,
and the map is refused with the reason (docs/FORGE.md).

Every Forge module is imported inside the functions, at call time: this file imports without Forge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lib_merge.engine.parts import Part, StoredParts
from lib_merge.errors import HostPatchError


class KeyTrace:
    """Stands in for one checkpoint tensor while Forge's conversion moves it around."""

    __slots__ = ("key", "shape", "dtype", "rows", "transposed")

    def __init__(self, key: str, shape, dtype: torch.dtype, rows=None, transposed: bool = False):
        self.key = key
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.rows = rows
        self.transposed = transposed

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1) or self.transposed:
            raise _cannot_follow(self.key, f"[{index!r}]")
        start, stop, _ = index.indices(self.shape[0])
        base = self.rows[0] if self.rows else 0
        return KeyTrace(self.key, (stop - start, *self.shape[1:]), self.dtype, (base + start, base + stop))

    def transpose(self, dim0: int, dim1: int) -> KeyTrace:
        if len(self.shape) != 2 or {dim0, dim1} != {0, 1}:
            raise _cannot_follow(self.key, f".transpose({dim0}, {dim1})")
        return KeyTrace(self.key, (self.shape[1], self.shape[0]), self.dtype, self.rows, not self.transposed)

    def contiguous(self) -> KeyTrace:
        return self

    def round(self) -> KeyTrace:
        return self  # Forge rounds fp32 position ids: whole numbers already

    def __getattr__(self, name: str):
        raise _cannot_follow(self.key, f".{name}")


def _cannot_follow(key: str, what: str) -> HostPatchError:
    return HostPatchError(f"Forge's key conversion does {what} on {key}, which Alloy cannot follow")


@dataclass(frozen=True)
class Placement:
    """One piece of a checkpoint key in Forge: a tensor of a component module."""

    component: str  # unet, vae, text_encoder, text_encoder_2 ... (Forge's component names)
    name: str  # the tensor's name inside that module
    rows: tuple[int, int] | None
    transposed: bool


def trace_conversion(config, stored: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, list[Placement]]:
    """Checkpoint key (as stored) -> its placements, by Forge's `split_state_dict` steps run on stand-ins.

    `config` is the loaded model's huggingface_guess object (`sd_model.model_config`). Keys Forge
    leaves out of every component are absent from the answer.
    """
    from backend.loader import preprocess_state_dict
    from backend.state_dict import try_filter_state_dict

    try:
        sd = preprocess_state_dict({key: KeyTrace(key, shape, dtype) for key, (shape, dtype) in stored.items()})
        sd = config.process_vae_state_dict(sd)
        components = {
            config.unet_target: try_filter_state_dict(sd, config.unet_key_prefix),
            config.vae_target: try_filter_state_dict(sd, config.vae_key_prefix),
        }
        sd = config.process_clip_state_dict(sd)
        clip_target = config.clip_target(sd) if callable(config.clip_target) else config.clip_target
        for prefix, component in clip_target.items():
            components[component] = try_filter_state_dict(sd, [prefix + "."])
    except HostPatchError:
        raise
    except Exception as e:  # a step that needs real tensor values: not a conversion Alloy can mirror
        raise HostPatchError(f"Forge's key conversion could not be traced ({type(e).__name__}: {e})") from None
    placements: dict[str, list[Placement]] = {}
    for component, state in components.items():
        for name, trace in state.items():
            if isinstance(trace, KeyTrace):
                placements.setdefault(trace.key, []).append(Placement(component, name, trace.rows, trace.transposed))
    return placements


class ForgeModelView:
    """Model A's checkpoint keys mapped onto Forge's component modules: the live merge's `PatchTarget`.

    Parameters are looked up on every call: Forge's LoRA loader swaps parameter objects. A component
    stored in half precision whose tensor is fp32 now had it widened after loading (Forge's text
    encoder embeddings): results are rounded to half first, as Forge's loading of the file would.
    """

    def __init__(
        self,
        modules: Mapping[str, torch.nn.Module],
        placements: Mapping[str, list[Placement]],
        shapes: Mapping[str, tuple[int, ...]],
    ):
        self.modules = dict(modules)
        self.placements = dict(placements)
        self.shapes = dict(shapes)
        present = {component: set(_named_tensors(module)) for component, module in self.modules.items()}
        self.stored_dtypes = {component: _stored_dtype(module) for component, module in self.modules.items()}
        self.unused_keys = frozenset(
            key
            for key in self.shapes
            if not self.placements.get(key)
            or any(p.component not in present or p.name not in present[p.component] for p in self.placements[key])
        )

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        named = {component: _named_tensors(module) for component, module in self.modules.items()}
        found: dict[str, torch.Tensor] = {}
        for key, places in self.placements.items():
            if key in self.unused_keys:
                continue
            parts = [Part(named[p.component][p.name], p.rows, p.transposed) for p in places]
            stored = self.stored_dtypes[places[0].component]
            widened = stored in HALF and all(part.tensor.dtype == torch.float32 for part in parts)
            if len(parts) == 1 and parts[0].rows is None and not parts[0].transposed and not widened:
                found[key] = parts[0].tensor
            else:
                found[key] = StoredParts(parts, self.shapes[key], via=stored if widened else None)
        return found


HALF = (torch.float16, torch.bfloat16)


def _named_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_buffers()), **dict(module.named_parameters())}


def _stored_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The floating dtype most of a component's parameters have: the one Forge loaded it in."""
    counts: dict[torch.dtype, int] = {}
    for tensor in module.parameters():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.get) if counts else None
