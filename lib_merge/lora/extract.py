"""A LoRA extracted from two checkpoints: ΔW = α·W_A − β·W_B per targeted module, factorised
(docs/FORMULAS.md §10.2).

Streams weight by weight (a fused q/k/v weight once for its three modules): only two weights and
their factors are in memory at a time, on the device the settings name (ΔW and its SVD there, the
factors back on the CPU). Spatial (3×3) convolutions take their own rank; a text encoder
whose largest change is below the threshold is left out, and the notes say so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_merge.errors import ArchMismatchError, Cancelled, ParameterError, ShapeMismatchError
from lib_merge.io.device import check_device
from lib_merge.io.source import SourceModel
from lib_merge.lora.factor import Factoring, RankRule, factorise
from lib_merge.lora.names import ModuleTarget, module_targets
from lib_merge.lora.write import LoraBuild, OutModule

Progress = Callable[[int, int], None]
_TE_LABELS = {"te": "the text encoder", "te1": "text encoder 1 (CLIP-L)", "te2": "text encoder 2 (OpenCLIP-G)"}


@dataclass
class ExtractSettings:
    a: str  # the fine-tune
    b: str  # the base it was tuned from
    alpha: float = 1.0  # ΔW = alpha · A − beta · B
    beta: float = 1.0
    rule: RankRule = field(default_factory=lambda: RankRule(rank=32))
    conv_rule: RankRule | None = None  # spatial convolutions; None: the same as `rule`
    skip_convs: bool = False  # leave the 3×3 convolutions out
    factoring: Factoring = field(default_factory=Factoring)
    te_threshold: float = 1e-4
    output_alpha: float | None = None  # None: alpha = rank (scale 1)
    device: str = "cpu"  # where ΔW is formed and factorised


def extract_lora(
    settings: ExtractSettings,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoraBuild:
    if settings.output_alpha is not None and not 0 < settings.output_alpha < float("inf"):
        raise ParameterError(f"network alpha {settings.output_alpha}: give a positive number")
    device = check_device(settings.device)
    a, b = SourceModel(settings.a), SourceModel(settings.b)
    try:
        if a.arch.arch is None:
            raise ArchMismatchError(f"{a.name} is no checkpoint Alloy knows ({a.arch.label})")
        if a.arch.id != b.arch.id:
            raise ArchMismatchError(f"{a.name} is {a.arch.label} but {b.name} is {b.arch.label}")
        targets = [t for t in module_targets(a.shapes, a.arch.id) if not (settings.skip_convs and t.spatial)]
        notes: list[str] = []
        missing = [t for t in targets if t.target.key not in b]
        if missing:
            notes.append(f"{len(missing)} modules missing in {b.name}, not extracted (first: {missing[0].name})")
            targets = [t for t in targets if t.target.key in b]
        by_key: dict[str, list[ModuleTarget]] = {}  # a fused q/k/v weight: three modules, read once
        for module in targets:
            by_key.setdefault(module.target.key, []).append(module)
        modules: dict[str, OutModule] = {}
        unchanged: list[str] = []
        largest: dict[str, float] = {}  # text encoder -> its largest |ΔW|
        encoder_modules: dict[str, list[str]] = {}
        for done, (key, group) in enumerate(by_key.items()):
            if should_stop is not None and should_stop():
                raise Cancelled("LoRA extraction cancelled")
            delta = _delta(key, a, b, settings, device)
            encoder = group[0].text_encoder
            if encoder:
                largest[encoder] = max(largest.get(encoder, 0.0), float(delta.abs().max()))
                encoder_modules.setdefault(encoder, []).extend(m.name for m in group)
            for module in group:
                rows = module.target.rows
                out = _factorised(delta[rows[0] : rows[1]] if rows else delta, module, settings)
                if out is None:
                    unchanged.append(module.name)
                else:
                    modules[module.name] = out
            if progress is not None:
                progress(done + 1, len(by_key))
        dropped = _drop_quiet_text_encoders(modules, largest, encoder_modules, settings, notes)
        unchanged = [n for n in unchanged if n not in dropped]
        if unchanged:
            notes.append(f"{len(unchanged)} modules are equal in both models, not written")
        return LoraBuild(modules, a.arch.id, a.arch.prediction, _recipe(settings, a, b), notes, [a.path, b.path])
    finally:
        a.close()
        b.close()


def _delta(key: str, a: SourceModel, b: SourceModel, settings: ExtractSettings, device: torch.device) -> torch.Tensor:
    wa, wb = a.read(key).to(device, torch.float32), b.read(key).to(device, torch.float32)
    if wa.shape != wb.shape:
        raise ShapeMismatchError(f"{key}: {tuple(wa.shape)} in {a.name} but {tuple(wb.shape)} in {b.name}")
    return settings.alpha * wa - settings.beta * wb


def _factorised(delta: torch.Tensor, module: ModuleTarget, settings: ExtractSettings) -> OutModule | None:
    """The module's LoRA pair at its rank rule (the conv rule for 3×3 convs), or None for a zero change."""
    rule = settings.conv_rule if module.spatial and settings.conv_rule else settings.rule
    pair = factorise(delta, rule, settings.factoring, module.target.key)
    if pair is None:
        return None
    up, alpha = pair.up, float(pair.rank)
    if settings.output_alpha is not None:  # (alpha / rank) · up' · down = up · down
        alpha = settings.output_alpha
        up = up * (pair.rank / alpha)
    return OutModule(up.cpu(), pair.down.cpu(), alpha)


def _drop_quiet_text_encoders(
    modules: dict[str, OutModule],
    largest: dict[str, float],
    encoder_modules: dict[str, list[str]],
    settings: ExtractSettings,
    notes: list[str],
) -> set[str]:
    """Remove the modules of each text encoder whose largest |ΔW| is at most the threshold; their names."""
    dropped: set[str] = set()
    for encoder in sorted(largest):
        if largest[encoder] <= settings.te_threshold:
            dropped.update(encoder_modules[encoder])
            notes.append(
                f"{_TE_LABELS[encoder]} is left out: its largest change {largest[encoder]:.3g} is at most "
                f"the threshold {settings.te_threshold:g}"
            )
    for name in dropped:
        modules.pop(name, None)
    return dropped


def _recipe(settings: ExtractSettings, a: SourceModel, b: SourceModel) -> dict:
    how = settings.factoring
    conv = settings.conv_rule or settings.rule
    return {
        "method": "extract",
        "a": {"file": os.path.basename(a.path), "sha256": a.sha256(), "alpha": settings.alpha},
        "b": {"file": os.path.basename(b.path), "sha256": b.sha256(), "beta": settings.beta},
        "rank_rule": settings.rule.describe(),
        "conv_rank_rule": "off" if settings.skip_convs else conv.describe(),
        "full_svd": how.full_svd,
        "seed": how.seed,
        "clamp": how.clamp,
        "te_threshold": settings.te_threshold,
        "alpha": settings.output_alpha,
    }
