"""What a LoRA file holds: module types, ranks, alphas, the base it was made for, and how many of its
modules find their place in a checkpoint (the base's reference layout when none is given)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from lib_merge.lora.file import LoraFile, base_label, base_shapes, match


@dataclass
class LoraReport:
    file: str
    modules: int
    kinds: dict[str, int]  # "lora", "loha", "lokr", "ia3", "full", "norm", "+dora" suffixed
    ranks: dict[int, int]  # rank -> modules
    alphas: dict[str, int]  # alpha as written -> modules ("none" without one)
    base: str | None  # architecture id the names point to
    checked_against: str  # "the loaded model", a file, or the base's reference layout
    matched: int
    unmatched: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    zero: list[str] = field(default_factory=list)  # modules whose ΔW is zero (they change nothing)

    @property
    def base_label(self) -> str:
        return base_label(self.base)

    def lines(self) -> list[str]:
        base = self.base_label
        ranks = ", ".join(f"{r} ×{n}" for r, n in sorted(self.ranks.items()))
        out = [
            f"file: {self.file}",
            f"modules: {self.modules} ({', '.join(f'{k} {n}' for k, n in sorted(self.kinds.items()))})",
            "rank: " + (ranks or "none (no factorised modules)"),
            "alpha: " + ", ".join(f"{a} ×{n}" for a, n in sorted(self.alphas.items())),
            f"base: {base}",
            f"matched in {self.checked_against}: {self.matched} of {self.modules}",
        ]
        if self.unmatched:
            out.append(f"unmatched ({len(self.unmatched)}): " + ", ".join(self.unmatched[:20]))
        if self.zero:
            out.append(f"no effect ({len(self.zero)} all-zero modules): " + ", ".join(self.zero[:5]))
        for key in ("ss_network_dim", "ss_network_alpha", "ss_base_model_version", "ss_output_name"):
            if key in self.metadata:
                out.append(f"{key}: {self.metadata[key]}")
        return out


def inspect_lora(
    path: str, shapes: Mapping[str, tuple[int, ...]] | None = None, checked_against: str | None = None
) -> LoraReport:
    lora = LoraFile.read(path)
    base = lora.likely_base()
    if shapes is None:
        shapes = base_shapes(base or "sd1")
        checked_against = f"the {base_label(base or 'sd1')} layout"
    found = match(lora, shapes, checked_against or "the checkpoint", strict=False)
    ranks = Counter(m.rank for m in lora.modules.values() if m.rank is not None)
    alphas = Counter(f"{m.alpha:g}" if m.alpha is not None else "none" for m in lora.modules.values())
    return LoraReport(
        lora.path,
        len(lora.modules),
        dict(lora.kinds()),
        dict(ranks),
        dict(alphas),
        base,
        checked_against or "the checkpoint",
        len(found.targets),
        found.unmatched,
        lora.metadata,
        sorted(name for name, m in lora.modules.items() if m.is_zero()),
    )
