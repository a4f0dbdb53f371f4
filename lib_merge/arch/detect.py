"""Architecture detection from key names and tensor ranks, header only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lib_merge.arch.registry import ARCHITECTURES, PREDICTION_MARKERS, UNET, Architecture

INPUT_CONV = UNET + "input_blocks.0.0.weight"

# NAI-style CLIP files lack the "text_model." level.
_NAI_PREFIX = "cond_stage_model.transformer."
_NAI_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")


@dataclass
class ArchInfo:
    """What a checkpoint is, and why (reported by `info FILE` and `inspect`)."""

    id: str  # "unknown" when nothing matched
    variant: str = ""
    prediction: str = "epsilon"
    prediction_source: str = "default"
    components_found: dict[str, int] = field(default_factory=dict)  # component -> key count
    components_missing: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # canonical -> key in the file
    input_channels: int | None = None

    @property
    def arch(self) -> Architecture | None:
        return ARCHITECTURES.get(self.id)

    @property
    def label(self) -> str:
        arch = self.arch
        return arch.variant_label(self.variant) if arch else "unknown architecture"


def alias_map(keys: list[str]) -> dict[str, str]:
    """Canonical key -> key as stored, for files that use a known alias layout."""
    aliases = {}
    for k in keys:
        if k.startswith(_NAI_PREFIX) and k[len(_NAI_PREFIX) :].startswith(_NAI_PARTS):
            aliases[_NAI_PREFIX + "text_model." + k[len(_NAI_PREFIX) :]] = k
    return aliases


def detect(shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str] | None = None) -> ArchInfo:
    """Match canonical key names and ranks against every known signature."""
    candidates: list[tuple[int, Architecture]] = []
    rejected: list[str] = []
    for arch in ARCHITECTURES.values():
        reason = _mismatch(arch, shapes)
        if reason:
            rejected.append(f"{arch.id}: {reason}")
            continue
        known = arch.keys or arch.signature
        matched = sum(1 for k, shape in shapes.items() if k in known and _rank(known[k]) == len(shape))
        candidates.append((matched, arch))
    if not candidates:
        return ArchInfo(id="unknown", rejected=rejected)
    candidates.sort(key=lambda c: -c[0])
    arch = candidates[0][1]
    rejected += [f"{a.id}: matched fewer keys ({n}) than {arch.id}" for n, a in candidates[1:]]
    info = ArchInfo(id=arch.id, rejected=rejected)
    channels = shapes.get(INPUT_CONV)
    if channels is not None and len(channels) == 4:
        info.input_channels = channels[1]
        info.variant = arch.variants.get(channels[1], f"{channels[1]}-channel")
    for key, present, variant in arch.key_variants:
        if (key in shapes) == present:
            info.variant = variant
            break
    for name in arch.components:
        count = sum(1 for k in shapes if arch.component_of(k) == name)
        if count:
            info.components_found[name] = count
        else:
            info.components_missing.append(name)
    info.prediction, info.prediction_source = _prediction(shapes, metadata or {})
    return info


def _rank(entry) -> int:
    return entry if isinstance(entry, int) else len(entry[0])


def _mismatch(arch: Architecture, shapes: Mapping[str, tuple[int, ...]]) -> str:
    signature = arch.signature
    missing = [k for k in signature if k not in shapes]
    if missing:
        return f"missing {len(missing)} of {len(signature)} signature keys (first: {missing[0]})"
    present = [k for k in arch.absent if k in shapes]
    if present:
        return f"has {present[0]}, which {arch.label} has not"
    for k, rank in signature.items():
        if len(shapes[k]) != rank:
            return f"rank mismatch at {k}: {len(shapes[k])}-d, expected {rank}-d"
    return ""


def _prediction(shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str]) -> tuple[str, str]:
    present = [m for m in PREDICTION_MARKERS if m in shapes]
    if "edm_vpred.sigma_max" in present:
        return "edm_v", "marker keys"
    if "v_pred" in present:
        return ("v_ztsnr" if "ztsnr" in present else "v"), "marker keys"
    spec = metadata.get("modelspec.prediction_type")
    if spec:
        return spec, "metadata"
    return "epsilon", "default"
