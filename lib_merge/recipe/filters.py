"""Include / exclude: which keys a merge touches, by block, VAE, Adjust or substring."""

from __future__ import annotations

from dataclasses import dataclass

from lib_merge.errors import BlockVectorError

ADJUST_KEYS = tuple(
    "model.diffusion_model." + k
    for k in ("input_blocks.0.0.weight", "input_blocks.0.0.bias", "out.0.weight", "out.0.bias", "out.2.weight",
              "out.2.bias")
)  # fmt: skip
VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class KeyFilter:
    mode: str  # "include" or "exclude"
    targets: tuple[str, ...]  # slot names, "VAE", "Adjust"
    elements: tuple[str, ...] = ()  # substrings of keys

    def bind(self, slot_names: tuple[str, ...], label: str, fine_names: tuple[str, ...] = ()) -> KeyFilter:
        """Targets checked against the schema (and its fine names) and put in schema order."""
        known = tuple(dict.fromkeys(tuple(slot_names) + ("VAE", "Adjust") + tuple(fine_names)))
        unknown = [t for t in self.targets if t not in known]
        if unknown:
            raise BlockVectorError(
                f"{self.mode}(): unknown block {unknown[0]!r} for {label}; valid: {', '.join(known)}"
            )
        return KeyFilter(self.mode, tuple(t for t in known if t in self.targets), self.elements)

    def merges(self, key: str, key_slots: set[str]) -> bool:
        """The first rule that hits decides; with no hit, exclude merges and include skips."""
        hit = (
            bool(key_slots & set(self.targets))
            or ("Adjust" in self.targets and key in ADJUST_KEYS)
            or any(e in key for e in self.elements)
            or ("VAE" in self.targets and key.startswith(VAE_PREFIX))
        )
        return not hit if self.mode == "exclude" else hit
