"""Elemental merge rules: `Blocks:Elements:Ratio` entries, the last match sets α.

Parsing checks the shape of each entry; slot names are checked against the model's schema when
the recipe is bound (the same text works on SD1 and SDXL with each one's own block names).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from lib_merge.errors import ElementalSyntaxError

LETTERS = ("R", "U", "X")


@dataclass(frozen=True)
class Entry:
    text: str
    blocks: tuple[str, ...]  # slot names and "A-B" ranges as written; empty = every slot
    blocks_not: bool
    elements: tuple[str, ...]  # substrings; empty = every key of the slot
    elements_not: bool
    ratio: float | str  # a number or R/U/X
    written: str = ""  # the entry as the user wrote it, for messages


@dataclass(frozen=True)
class Elemental:
    """Parsed rules; `slots[i]` is entry i's set of slot names once bound to a schema."""

    entries: tuple[Entry, ...]
    slots: tuple[frozenset[str], ...] | None = None
    seed: int = 0

    @property
    def text(self) -> str:
        return ", ".join(e.text for e in self.entries)

    def bind(self, slot_names: tuple[str, ...], label: str, fine_names: tuple[str, ...] = ()) -> Elemental:
        """Entries' blocks as sets of slot names; a schema's fine names (SDXL's IN411) count too."""
        bound = []
        for n, entry in enumerate(self.entries, 1):
            chosen: set[str] = set()
            for item in entry.blocks:
                first = item.split("-")[0]
                names = fine_names if first not in slot_names and first in fine_names else slot_names
                chosen |= _expand(item, names, entry, n, label)
            bound.append(frozenset(chosen) if entry.blocks else frozenset(slot_names))
        return Elemental(self.entries, tuple(bound), self.seed)

    def alpha_for(self, key: str, key_slots: set[str], alpha: float) -> float:
        """The α of one key (whose block and fine block are `key_slots`): the last matching entry's."""
        index = self.last_match(key, key_slots)
        if index is None:
            return alpha
        entry = self.entries[index]
        return entry.ratio if isinstance(entry.ratio, float) else self._draw(entry.ratio, key)

    def last_match(self, key: str, key_slots: set[str]) -> int | None:
        """Index of the last entry that matches the key, or None."""
        found = None
        for index, (entry, slots) in enumerate(zip(self.entries, self.slots or (), strict=True)):
            in_blocks = bool(key_slots & slots) != (entry.blocks_not and bool(entry.blocks))
            hit = any(s in key for s in entry.elements) if entry.elements else True
            in_elements = hit != (entry.elements_not and bool(entry.elements))
            if in_blocks and in_elements:
                found = index
        return found

    def _draw(self, letter: str, key: str) -> float:
        """One draw per key from default_rng([seed, crc32(key)]); X uses u = 1, l = 0."""
        r = float(np.random.default_rng([self.seed, zlib.crc32(key.encode())]).random())
        return {"R": r, "U": 1.5 - 2 * r, "X": 1.0 - r}[letter]


def parse_elemental(text: str, seed: int = 0) -> Elemental:
    entries = []
    raw = [e.strip() for e in re.split(r"[,\n]", text)]
    for n, item in enumerate((e for e in raw if e), 1):
        parts = item.split(":")
        if len(parts) != 3:
            raise ElementalSyntaxError(f'elemental entry {n} "{item}": expected Blocks:Elements:Ratio')
        blocks, elements, ratio = (p.split() for p in parts)
        blocks_not = bool(blocks) and blocks[0] == "NOT"
        elements_not = bool(elements) and elements[0] == "NOT"
        ratio_text = " ".join(ratio)
        if ratio_text in LETTERS:
            value: float | str = ratio_text
        else:
            try:
                value = float(ratio_text)
            except ValueError:
                raise ElementalSyntaxError(
                    f'elemental entry {n} "{item}": the ratio {ratio_text!r} is not a number or R/U/X'
                ) from None
        shown = ratio_text if isinstance(value, str) else repr(0.0 if value == 0 else value)
        normal = f"{' '.join(blocks)}:{' '.join(elements)}:{shown}"
        entries.append(
            Entry(
                normal,
                tuple(blocks[blocks_not:]),
                blocks_not,
                tuple(elements[elements_not:]),
                elements_not,
                value,
                item,
            )
        )
    return Elemental(tuple(entries), seed=seed)


def _expand(item: str, slots: tuple[str, ...], entry: Entry, n: int, label: str) -> set[str]:
    if "-" in item:
        first, _, last = item.partition("-")
        if first not in slots or last not in slots or slots.index(first) > slots.index(last):
            raise ElementalSyntaxError(f'elemental entry {n} "{entry.written}": bad range {item!r} for {label}')
        return set(slots[slots.index(first) : slots.index(last) + 1])
    if item not in slots:
        raise ElementalSyntaxError(
            f'elemental entry {n} "{entry.written}": unknown block {item!r} for {label}; valid: {", ".join(slots)}'
        )
    return {item}
