"""Explain a merge: the block weights that best explain a model M as a merge of candidate parents.

Per block of the architecture's schema, least squares over every key of the block:
weighted sum M − A ≈ α·(B − A), add difference M − A ≈ α·(B − C). With d = M − A and e the direction,
α = Σ⟨d, e⟩ / Σ‖e‖² and the share of M's change from A the fit explains is
1 − ‖d − α·e‖² / ‖d‖² = Σ⟨d, e⟩² / (Σ‖d‖²·Σ‖e‖²) (docs/FORMULAS.md §11). Tensors stream key by key in
float64 chunks, as in similarity.py, so no model is ever loaded whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_merge.arch.blocks import BlockSchema, schema_for
from lib_merge.arch.registry import is_mergeable
from lib_merge.errors import ArchMismatchError, ParameterError, ShapeMismatchError
from lib_merge.io.source import SourceModel

Progress = Callable[[int, int], None]
CHUNK = 1 << 20  # elements per float64 step
THRESHOLD = 0.9  # overall share explained below which M is called no such merge
ROUNDING = 2.0**-10  # a change from A below this share of A's RMS is rounding (fp32 parents, fp16 M)
TIE = 1e-3  # auto mode: a weighted sum must explain this much more to beat the add difference
MODES = ("weighted_sum", "add_difference")
INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"  # inpainting models widen it (dim 1)


@dataclass(frozen=True)
class ExplainInputs:
    """The files: M, its candidate parents, and the mode to fit ("auto": the better one)."""

    m: str
    a: str
    b: str
    c: str | None = None
    mode: str = "auto"


@dataclass
class BlockFit:
    block: str
    keys: int
    alpha: float
    explained: float  # share of M's change from A in this block the fit explains (0…1)
    note: str = ""  # "M equals A here", …


@dataclass
class Explanation:
    m: str
    a: str
    b: str
    c: str | None
    architecture: str
    schema: str
    mode: str  # the chosen fit
    explained: float  # over every block: 1 − Σ residual / Σ‖M − A‖²
    blocks: list[BlockFit] = field(default_factory=list)
    alternatives: dict[str, float] = field(default_factory=dict)  # every mode fitted -> its overall share
    skipped: int = 0  # keys of M not in every parent
    change: float = 0.0  # Σ‖M − A‖², 0 when M equals A in every key compared

    @property
    def is_merge(self) -> bool:
        return self.explained >= THRESHOLD

    def verdict(self) -> str:
        """One plain sentence: what M is, or that it is no such merge."""
        if self.change == 0:
            return "M equals A in every key compared: nothing to explain (alpha 0)."
        what = _describe(self.mode)
        if not self.is_merge:
            if len(self.alternatives) > 1:
                best = self.mode.replace("_", " ")
                return (f"M is neither {_describe('weighted_sum')} nor {_describe('add_difference')}: the best fit "
                        f"({best}) explains {percent(self.explained)} of its change.")  # fmt: skip
            return f"M is not {what}: the best fit explains {percent(self.explained)} of its change."
        poor = [f"{b.block} ({percent(b.explained)})" for b in self.blocks if b.explained < THRESHOLD]
        tail = f" Poorly fitted blocks: {', '.join(poor)}." if poor else ""
        return f"M is {what}: the fitted block weights explain {percent(self.explained)} of its change from A.{tail}"


def _describe(mode: str) -> str:
    return "an add difference of A, B and C" if mode == "add_difference" else "a weighted sum of A and B"


def percent(share: float) -> str:
    """A share as "12.34 %", rounded down so that 99.999 % never reads as 100 %."""
    value = math.floor(share * 10000 + 1e-6) / 100
    return f"{value:.2f}".rstrip("0").rstrip(".") + " %"


@dataclass
class _Sums:
    """Float64 sums of one block: ‖d‖², ‖A‖², and ⟨d, e⟩, ‖e‖² per mode."""

    keys: int = 0
    dd: float = 0.0
    aa: float = 0.0
    de: dict[str, float] = field(default_factory=dict)
    ee: dict[str, float] = field(default_factory=dict)


def explain(inputs: ExplainInputs, progress: Progress | None = None) -> Explanation:
    """Fit M against its candidate parents block by block; every input problem is raised before a read."""
    modes = _modes(inputs)
    roles = {"M": inputs.m, "A": inputs.a, "B": inputs.b} | ({"C": inputs.c} if inputs.c else {})
    sources: dict[str, SourceModel] = {}
    try:
        for role, path in roles.items():
            sources[role] = SourceModel(path)
        schema = _check_architectures(sources)
        keys, skipped = _keys(sources, schema)
        if not keys:
            raise ShapeMismatchError(f"M ({sources['M'].path}) shares no mergeable key with its candidate parents")
        sums = _accumulate(sources, keys, modes, progress)
    finally:
        for source in sources.values():
            source.close()
    order = {slot: i for i, slot in enumerate(schema.names_with_vae())}
    slots = sorted(sums, key=lambda slot: order.get(slot, len(order)))
    fits = {mode: [_fit(slot, sums[slot], mode) for slot in slots] for mode in modes}
    overall = {mode: _overall(sums, blocks) for mode, blocks in fits.items()}
    mode = _choose(overall)
    names = {role: source.name for role, source in sources.items()}
    return Explanation(
        m=names["M"], a=names["A"], b=names["B"], c=names.get("C"), architecture=sources["M"].arch.id,
        schema=schema.id, mode=mode, explained=overall[mode], blocks=fits[mode], alternatives=overall,
        skipped=skipped, change=sum(s.dd for s in sums.values()),
    )  # fmt: skip


def _modes(inputs: ExplainInputs) -> tuple[str, ...]:
    if inputs.mode == "auto":
        return MODES if inputs.c else ("weighted_sum",)
    if inputs.mode not in MODES:
        raise ParameterError(f"unknown mode {inputs.mode!r}: choose auto, {' or '.join(MODES)}")
    if inputs.mode == "add_difference" and not inputs.c:
        raise ParameterError("add difference needs model C: M − A ≈ alpha·(B − C)")
    return (inputs.mode,)


def _check_architectures(sources: dict[str, SourceModel]) -> BlockSchema:
    """One known architecture for every file (headers only), and its block schema."""
    m = sources["M"]
    for role, source in sources.items():
        if source.arch.arch is None:
            raise ArchMismatchError(
                f"{role} ({source.path}) is no checkpoint of a known architecture (a LoRA or a component file?): "
                "explain compares full checkpoints"
            )
        if source.arch.id != m.arch.id:
            raise ArchMismatchError(
                f"M ({m.path}) is {m.arch.label} but {role} ({source.path}) is {source.arch.label}: "
                "a merge has the architecture of its parents"
            )
    schema = schema_for(m.arch.id)
    assert schema is not None  # every known architecture has one (arch/registry.py)
    return schema


@dataclass(frozen=True)
class _Key:
    name: str
    slot: str
    channels: int | None = None  # the inpainting input conv: compare its first channels only


def _keys(sources: dict[str, SourceModel], schema: BlockSchema) -> tuple[list[_Key], int]:
    """M's mergeable block keys found in every parent with M's shape (the input conv may differ in
    channels); another shape is an error naming the file."""
    m = sources["M"]
    arch = m.arch.arch
    keys, skipped = [], 0
    for key in m.keys:
        slot = schema.slot_of(key)
        if slot is None or arch.component_of(key) is None or not is_mergeable(key, m.info(key).dtype):
            continue
        if not all(key in s for s in sources.values()):
            skipped += 1
            continue
        shape = m.shapes[key]
        channels = None
        for role, source in sources.items():
            other = source.shapes[key]
            if other == shape:
                continue
            if key == INPUT_CONV and len(other) == len(shape) == 4 and other[:1] + other[2:] == shape[:1] + shape[2:]:
                channels = min(channels or shape[1], other[1])
                continue
            raise ShapeMismatchError(
                f"key {key!r} has shape {list(shape)} in M ({m.path}) but {list(other)} in {role} ({source.path})"
            )
        keys.append(_Key(key, slot, channels))
    return keys, skipped


def _accumulate(
    sources: dict[str, SourceModel], keys: list[_Key], modes: tuple[str, ...], progress: Progress | None
) -> dict[str, _Sums]:
    sums: dict[str, _Sums] = {}
    for done, key in enumerate(keys, 1):
        block = sums.setdefault(key.slot, _Sums(de=dict.fromkeys(modes, 0.0), ee=dict.fromkeys(modes, 0.0)))
        views = {}
        try:
            for role, source in sources.items():
                view = source.view(key.name)
                views[role] = (view[:, : key.channels] if key.channels else view).reshape(-1)
            _add_key(block, views, modes)
        finally:
            for role in views:
                sources[role].release(key.name)
        if progress is not None:
            progress(done, len(keys))
    return sums


def _add_key(block: _Sums, views: dict[str, torch.Tensor], modes: tuple[str, ...]) -> None:
    block.keys += 1
    for start in range(0, views["M"].numel(), CHUNK):
        m, a, b = (views[r][start : start + CHUNK].double() for r in "MAB")
        d = m - a
        block.dd += float(d @ d)
        block.aa += float(a @ a)
        for mode in modes:
            e = b - a if mode == "weighted_sum" else b - views["C"][start : start + CHUNK].double()
            block.de[mode] += float(d @ e)
            block.ee[mode] += float(e @ e)


def _fit(slot: str, s: _Sums, mode: str) -> BlockFit:
    """α and the share explained of one block; the degenerate cases say what they are."""
    de, ee = s.de[mode], s.ee[mode]
    if s.dd == 0:
        return BlockFit(slot, s.keys, 0.0, 1.0, "M equals A here")
    if ee == 0:
        other = "A" if mode == "weighted_sum" else "C"
        return BlockFit(slot, s.keys, 0.0, 0.0, f"B equals {other} here, but M differs from A")
    alpha = de / ee
    explained = min(1.0, max(0.0, de * de / (s.dd * ee)))
    if explained < THRESHOLD and s.dd <= ROUNDING**2 * s.aa:
        return BlockFit(slot, s.keys, alpha, 1.0, "M differs from A here only by rounding")
    return BlockFit(slot, s.keys, alpha, explained)


def _overall(sums: dict[str, _Sums], blocks: list[BlockFit]) -> float:
    total = sum(s.dd for s in sums.values())
    if total == 0:
        return 1.0
    residual = sum(sums[b.block].dd * (1 - b.explained) for b in blocks)
    return min(1.0, max(0.0, 1 - residual / total))


def _choose(overall: dict[str, float]) -> str:
    """The better-explained mode; add difference (the one C was given for) on a tie."""
    if "add_difference" in overall and overall.get("weighted_sum", -1.0) <= overall["add_difference"] + TIE:
        return "add_difference"
    return max(overall, key=overall.__getitem__)
